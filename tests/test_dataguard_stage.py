"""The ``dataguard:<profile>`` stage: resolution at startup, in-place rewriting, the report on close,
and inside real pipelines through ``byteor run`` (one process and multi-process)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from byteor import DataGuardError
from byteor._stage import DROP, StageContext
from byteor.dataguard import codecs, envelope
from byteor.dataguard.errors import RegistryError, RuleError
from byteor.dataguard.report import parse_report_kv
from byteor.dataguard.stage import resolve_dataguard

REGISTRY = Path(__file__).parent / "vectors" / "dataguard" / "registry"
BIN = Path(sys.executable).parent


def account(i: int) -> dict[str, Any]:
    return {"user_id": i, "email": f"user{i}@example.com", "name": f"Person {i} Ünal", "active": i % 2 == 0}


def env(obj: dict[str, Any], version: int = 2) -> bytes:
    return envelope.encode(codecs.encode_mapkv(obj), codec_id=1, schema_id=7, msg_type=1, msg_version=version)


def write_profile(directory: Path, name: str = "pii", **overrides: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REGISTRY, directory / "registry", dirs_exist_ok=True)
    profile: dict[str, Any] = {
        "registry_root": "registry", "schema_id": 7, "msg_type": 1, "required_version": 2, "mode": "mapkv",
        "flow": "fused", "rules": ["email:mask=2:4:*", "name:hash"], "on_reject": "drop",
        "report": f"reports/{name}.kv",
    }
    profile.update(overrides)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(profile), encoding="utf-8")
    return path


def redacted(i: int) -> dict[str, Any]:
    a = account(i)
    email = a["email"]
    return dict(a, email=email[:2] + "*" * (len(email) - 6) + email[-4:],
                name="sha256:" + hashlib.sha256(a["name"].encode()).hexdigest())


def test_stage_rewrites_the_slot_in_place_and_reports_on_close(tmp_path: Path) -> None:
    write_profile(tmp_path / "profiles")
    ctx = StageContext(spec_dir=str(tmp_path), extra={"dataguard_profiles": str(tmp_path / "profiles")})
    stage = resolve_dataguard("dataguard:pii", ctx)
    assert stage.modifies and stage.family == "dataguard" and stage.target == "pii"
    slot = bytearray(512)
    view = memoryview(slot)
    msg = env(account(1))
    slot[:len(msg)] = msg
    n = stage.fn(view, len(msg))
    assert n > 0
    assert codecs.decode_mapkv(envelope.decode(slot[:n])[1]) == redacted(1)
    bad = env(account(2), version=1)
    slot[:len(bad)] = bad
    assert stage.fn(view, len(bad)) == DROP
    small = bytearray(100)  # the redacted envelope does not fit this slot: dropped, never truncated
    msg = env(account(3))
    small[:len(msg)] = msg
    assert stage.fn(memoryview(small), len(msg)) == DROP
    assert stage.close is not None
    stage.close()
    stage.close()  # idempotent
    report = parse_report_kv((tmp_path / "profiles" / "reports" / "pii.kv").read_text(encoding="utf-8"))
    c = report.counts
    assert (c["seen"], c["accepted"], c["schema_incompatible"], c["redact_overflow"]) == (3, 1, 1, 1)
    assert report.rules == ["email:mask=2:4:*", "name:hash"]


def test_stage_forwards_unchanged_messages_without_copying(tmp_path: Path) -> None:
    write_profile(tmp_path / "dataguard", flow="check")
    stage = resolve_dataguard("dataguard:pii", StageContext(spec_dir=str(tmp_path)))  # <spec_dir>/dataguard
    slot = bytearray(512)
    msg = env(account(4))
    slot[:len(msg)] = msg
    assert stage.fn(memoryview(slot), len(msg)) == len(msg)
    assert bytes(slot[:len(msg)]) == msg


@pytest.mark.parametrize(("overrides", "error", "fragment"), [
    ({"required_version": 9}, RegistryError, "older than --required-version=9"),
    ({"schema_id": 8}, RegistryError, "no schema registered"),
    ({"mode": "row"}, RegistryError, "codec is 'mapkv'"),
    ({"rules": ["email:mask=1"]}, RuleError, "rule 'email:mask=1'"),
    ({"rules": ["user_id:hash"]}, RuleError, "rule 'user_id:hash'"),
    ({"flow": "sideways"}, DataGuardError, "'flow' must be one of"),
    ({"schema_id": "7"}, DataGuardError, "'schema_id' must be a int"),
    ({"schema_id": True}, DataGuardError, "'schema_id' must be a int"),
    ({"msg_type": 2**40}, DataGuardError, "'msg_type'=1099511627776 is out of range"),
    ({"colour": "red"}, DataGuardError, "unknown key 'colour'"),
    ({"hash_key_env": "DG_TEST_UNSET_KEY"}, RuleError, "DG_TEST_UNSET_KEY is not set"),
])
def test_resolution_failures_name_the_profile(tmp_path: Path, overrides: dict[str, Any], error: type,
                                              fragment: str) -> None:
    path = write_profile(tmp_path / "dataguard", **overrides)
    with pytest.raises(error) as info:
        resolve_dataguard("dataguard:pii", StageContext(spec_dir=str(tmp_path)))
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_profile_name_and_file_problems(tmp_path: Path) -> None:
    ctx = StageContext(spec_dir=str(tmp_path))
    with pytest.raises(DataGuardError, match="must match"):
        resolve_dataguard("dataguard:../etc/passwd", ctx)
    with pytest.raises(DataGuardError, match="cannot read"):
        resolve_dataguard("dataguard:absent", ctx)
    (tmp_path / "dataguard").mkdir()
    (tmp_path / "dataguard" / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(DataGuardError, match="not valid JSON"):
        resolve_dataguard("dataguard:broken", ctx)
    with pytest.raises(DataGuardError, match="not dataguard:<profile>"):
        resolve_dataguard("dataguard:", ctx)


def test_reports_of_several_processes_of_one_run_add_up(tmp_path: Path) -> None:
    write_profile(tmp_path / "dataguard")
    ctx = StageContext(spec_dir=str(tmp_path))
    parent = resolve_dataguard("dataguard:pii", ctx)   # resolves, never sees a message
    shards = [resolve_dataguard("dataguard:pii", ctx) for _ in range(2)]
    slot = bytearray(512)
    for i, st in enumerate(shards * 3):
        msg = env(account(i))
        slot[:len(msg)] = msg
        st.fn(memoryview(slot), len(msg))
    for st in (*shards, parent):
        assert st.close is not None
        st.close()
    report = parse_report_kv((tmp_path / "dataguard" / "reports" / "pii.kv").read_text(encoding="utf-8"))
    assert report.counts["seen"] == 6 and report.counts["out_forward_output"] == 6
    assert report.rule_counts == [(6, 0), (6, 0)]


# ----------------------------------------------------------------------------- inside byteor run

SPEC = """pipeline.name=dataguard-test
pipeline.target=SingleRing
pipeline.ring.capacity=64
pipeline.ring.slot_bytes=512
pipeline.stages.0.id=guard
pipeline.stages.0.op=resolver
pipeline.stages.0.resolver_key=dataguard:pii
pipeline.stages.1.id=tail
pipeline.stages.1.op=identity
"""


def _run_pipeline(tmp_path: Path, *extra: str, n: int = 200) -> tuple[list[bytes], Any]:
    write_profile(tmp_path / "dataguard")
    spec = tmp_path / "spec.kv"
    spec.write_text(SPEC, encoding="utf-8")
    msgs = [env(account(i)) for i in range(n)] + [env(account(999), version=1), b"not an envelope"]
    src = tmp_path / "in.hex"
    src.write_text("".join(m.hex() + "\n" for m in msgs), encoding="ascii")
    out = tmp_path / "out.hex"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    p = subprocess.run([str(BIN / "byteor"), "run", str(spec), f"--input={src}", "--input-format=hex",
                        "--output=hex", f"--output-file={out}", *extra], capture_output=True, text=True,
                       env=full_env, timeout=240, check=False)
    assert p.returncode == 0, p.stderr
    lines = out.read_text(encoding="ascii").splitlines()
    report = parse_report_kv((tmp_path / "dataguard" / "reports" / "pii.kv").read_text(encoding="utf-8"))
    return [bytes.fromhex(line) for line in lines], report


def _check_every_message_redacted(outputs: list[bytes], report: Any, n: int) -> None:
    assert len(outputs) == n
    got = sorted((codecs.decode_mapkv(envelope.decode(m)[1]) for m in outputs), key=lambda o: o["user_id"])
    assert got == [redacted(i) for i in range(n)]
    c = report.counts
    assert (c["seen"], c["accepted"], c["rejected"], c["out_forward_output"]) == (n + 2, n, 2, n)
    assert (c["schema_incompatible"], c["decode_err"]) == (1, 1)


def test_dataguard_stage_in_a_single_process_pipeline(tmp_path: Path) -> None:
    if importlib.util.find_spec("byteor.runtime.sp") is None:
        pytest.skip("byteor.runtime.sp (the runtime helper's SP executor) is not in this build yet")
    outputs, report = _run_pipeline(tmp_path, "--sp")
    _check_every_message_redacted(outputs, report, 200)


def test_dataguard_stage_in_a_multi_process_pipeline_redacts_every_message(tmp_path: Path) -> None:
    if importlib.util.find_spec("byteor.runtime.mp") is None:
        pytest.skip("byteor.runtime.mp (the runtime helper's MP executor) is not in this build yet")
    outputs, report = _run_pipeline(tmp_path, "--wait=block", f"--ring-path={tmp_path / 'ring'}")
    _check_every_message_redacted(outputs, report, 200)
