"""DataGuard through its own product script: ``byteor-dataguard run`` (the product script,
not only ``byteor``) runs a SingleRing with a ``dataguard:<profile>`` stage in ``row`` mode, in one
process and across processes, redacting every accepted message and counting into the report."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

import test_dataguard_stage as dgs
from byteor.dataguard import codecs, envelope
from byteor.dataguard.report import parse_report_kv
from conftest import BIN

FIELDS = [("id", "int"), ("name", "string"), ("ok", "bool"), ("raw", "bytes")]

SPEC = """pipeline.name=dataguard-row
pipeline.target=SingleRing
pipeline.ring.capacity=64
pipeline.ring.slot_bytes=256
pipeline.stages.0.id=guard
pipeline.stages.0.op=resolver
pipeline.stages.0.resolver_key=dataguard:rows
pipeline.stages.1.id=tail
pipeline.stages.1.op=identity
"""


def row_env(i: int) -> bytes:
    row = codecs.encode_row(FIELDS, {"id": i, "name": f"Zoë {i}", "ok": i % 2 == 0, "raw": bytes([i & 0xFF])})
    return envelope.encode(row, codec_id=2, schema_id=9, msg_type=4, msg_version=1)


@pytest.mark.parametrize("mode", ["sp", "mp"])
def test_dataguard_script_runs_a_row_mode_pipeline(mode: str, tmp_path: Path) -> None:
    dgs.write_profile(tmp_path / "dataguard", name="rows", schema_id=9, msg_type=4, required_version=1,
                      mode="row", rules=["name:mask=1:0:*", "raw:drop"])
    spec = tmp_path / "spec.kv"
    spec.write_text(SPEC, encoding="utf-8")
    n = 150
    mapkv_instead = envelope.encode(codecs.encode_mapkv({"id": 1}), codec_id=1, schema_id=9, msg_type=4,
                                    msg_version=1)
    msgs = [row_env(i) for i in range(n)] + [mapkv_instead, b"USM1 but far too short"]
    src = tmp_path / "in.hex"
    src.write_text("".join(m.hex() + "\n" for m in msgs), encoding="ascii")
    out = tmp_path / "out.hex"
    ring = Path("/dev/shm/byteor") / f"dgaudit-{uuid.uuid4().hex[:12]}"
    mode_args = ["--sp"] if mode == "sp" else [f"--ring-path={ring}", "--wait=block"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    p = subprocess.run([str(BIN / "byteor-dataguard"), "run", str(spec), *mode_args, f"--input={src}",
                        "--input-format=hex", "--output=hex", f"--output-file={out}"],
                       capture_output=True, text=True, env=full_env, timeout=240, check=False)
    assert p.returncode == 0, p.stderr
    assert not ring.exists()
    outputs = [bytes.fromhex(line) for line in out.read_text(encoding="ascii").splitlines()]
    got = [codecs.decode_row(FIELDS, envelope.decode(m)[1]) for m in outputs]
    assert got == [{"id": i, "name": "Z" + "*" * (len(f"Zoë {i}") - 1), "ok": i % 2 == 0, "raw": b""}
                   for i in range(n)]
    report = parse_report_kv((tmp_path / "dataguard" / "reports" / "rows.kv").read_text(encoding="utf-8"))
    c = report.counts
    assert (c["seen"], c["accepted"], c["rejected"], c["out_forward_output"]) == (n + 2, n, 2, n)
    assert (c["codec_mismatch"], c["decode_err"]) == (1, 1)
    assert c["seen"] == c["accepted"] + c["rejected"]
    assert report.rule_counts == [(n, 0), (n, 0)]


def test_dataguard_run_mode_overrides_the_profile(tmp_path: Path) -> None:
    """``byteor-dataguard run --mode=row`` decides the codec, whatever the profile says."""
    dgs.write_profile(tmp_path / "dataguard", name="rows", schema_id=9, msg_type=4, required_version=1,
                      mode="mapkv", rules=["name:mask=1:0:*"])
    spec = tmp_path / "spec.kv"
    spec.write_text(SPEC, encoding="utf-8")
    src = tmp_path / "in.hex"
    src.write_text("".join(row_env(i).hex() + "\n" for i in range(5)), encoding="ascii")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    report_path = tmp_path / "dataguard" / "reports" / "rows.kv"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "byteor-dataguard"), "run", str(spec), "--sp", *extra, f"--input={src}",
                               "--input-format=hex", f"--output-file={tmp_path / 'out.hex'}"],
                              capture_output=True, text=True, env=full_env, timeout=120, check=False)

    # The profile's own mode does not match the registry's row codec: refused at startup (exit 3).
    as_profile = run()
    assert as_profile.returncode == 3 and "codec is 'row' but the run's mode is 'mapkv'" in as_profile.stderr
    overridden = run("--mode=row")
    assert overridden.returncode == 0, overridden.stderr
    counts = parse_report_kv(report_path.read_text(encoding="utf-8")).counts
    assert (counts["accepted"], counts["codec_mismatch"], counts["out_forward_output"]) == (5, 0, 5)
    bad = subprocess.run([str(BIN / "byteor-dataguard"), "run", str(spec), "--sp", "--mode=json",
                          "--input-ascii=x"], capture_output=True, text=True, env=full_env, timeout=60, check=False)
    assert bad.returncode == 2 and "--mode" in bad.stderr
