"""``byteor run`` file to file in multi-process mode (SingleRing and LaneGraph): the input is parsed
and the output encoded in C (native ingest and egress) when nothing needs Python per message. The
results, counts, failures and a vanished reader must look exactly as on the Python path."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import BIN, CliRunner, chain_spec_text, mode_cli_args


def _len32(msgs: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(m)) + m for m in msgs)


def _bump(m: bytes, k: int = 1) -> bytes:
    return bytes((b + k) & 0xFF for b in m)


MODES = ["mp", "lanegraph-mp"]


@pytest.mark.parametrize("mode", MODES)
def test_len32_output_round_trips_through_a_second_run(mode: str, cli: CliRunner, tmp_path: Path,
                                                       ring_dir: Path) -> None:
    spec = tmp_path / "bump.kv"
    spec.write_text(chain_spec_text(mode, ["add_u8"], slot_bytes=64, capacity=256))
    msgs = [os.urandom(i % 65) for i in range(3000)] + [b"", b"\n\n", b"\xff" * 64]
    first, second, third = tmp_path / "a.len32", tmp_path / "b.len32", tmp_path / "c.len32"
    first.write_bytes(_len32(msgs))
    for src, dst in ((first, second), (second, third)):
        r = cli("run", spec, *mode_cli_args(mode, ring_dir), f"--input={src}", "--input-format=len32",
                f"--output-file={dst}", "--output=len32", "--json")
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert (summary["messages_in"], summary["messages_out"], summary["dropped"]) == (len(msgs), len(msgs), 0)
    assert third.read_bytes() == _len32([_bump(m, 2) for m in msgs])


@pytest.mark.parametrize("mode", MODES)
def test_counts_and_output_stay_exact_when_a_stage_drops(mode: str, cli: CliRunner, tmp_path: Path,
                                                         ring_dir: Path) -> None:
    mod = f"drops_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text("def every_third(msg):\n    return None if int(msg[1:]) % 3 == 0 else msg\n")
    spec = tmp_path / "drops.kv"
    spec.write_text(chain_spec_text(mode, [f"py:{mod}:every_third", "add_u8"], capacity=128))
    n = 20_000
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(b"m%d\n" % i for i in range(n)))
    out = tmp_path / "out.hex"
    r = cli("run", spec, *mode_cli_args(mode, ring_dir), f"--input={src}", f"--output-file={out}", "--json",
            env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    kept = [_bump(b"m%d" % i) for i in range(n) if i % 3]
    summary = json.loads(r.stdout)
    assert (summary["messages_in"], summary["messages_out"], summary["dropped"]) == (n, len(kept), n - len(kept))
    assert out.read_bytes() == b"".join(m.hex().encode() + b"\n" for m in kept)


def test_a_failing_stage_keeps_what_left_before_it(cli: CliRunner, tmp_path: Path, ring_dir: Path) -> None:
    mod = f"fails_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text("def upto(msg):\n    if msg == b'm700':\n        raise ValueError('no m700')\n"
                                        "    return msg\n")
    spec = tmp_path / "fails.kv"
    spec.write_text(chain_spec_text("mp", [f"py:{mod}:upto"], capacity=64))
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(b"m%d\n" % i for i in range(5000)))
    out = tmp_path / "out.txt"
    r = cli("run", spec, *mode_cli_args("mp", ring_dir), f"--input={src}", f"--output-file={out}", "--output=lines",
            env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 1
    assert "stage 0 's0' failed on message 700: ValueError: no m700" in r.stderr and "Traceback" not in r.stderr
    written = out.read_bytes()
    expected = b"".join(b"m%d\n" % i for i in range(700))
    assert expected.startswith(written) and written.endswith(b"\n")  # whole messages, in order, none after
    assert not ring_dir.exists()


def test_malformed_input_is_reported_after_everything_before_it(cli: CliRunner, tmp_path: Path,
                                                               ring_dir: Path) -> None:
    spec = tmp_path / "bump.kv"
    spec.write_text(chain_spec_text("mp", ["add_u8"]))
    src = tmp_path / "in.hex"
    src.write_text("".join(f"{i % 256:02x}\n" for i in range(3000)) + "0g\n" + "00\n")
    out = tmp_path / "out.txt"
    r = cli("run", spec, *mode_cli_args("mp", ring_dir), f"--input={src}", "--input-format=hex",
            f"--output-file={out}", "--output=hex")
    assert r.returncode == 2
    assert "--input line 3001 is not valid hex: invalid character 'g'" in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == b"".join(b"%02x\n" % ((i + 1) % 256) for i in range(3000))


@pytest.mark.parametrize("mode", MODES)
def test_a_vanished_reader_ends_the_run_quietly(mode: str, tmp_path: Path, ring_dir: Path) -> None:
    spec = tmp_path / "bump.kv"
    spec.write_text(chain_spec_text(mode, ["add_u8"]))
    src = tmp_path / "in.txt"
    src.write_bytes(b"x\n" * 200_000)
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write fails with EPIPE
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    try:
        r = subprocess.run([str(BIN / "byteor"), "run", str(spec), *mode_cli_args(mode, ring_dir), f"--input={src}"],
                           stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, check=False, env=env)
    finally:
        os.close(write_end)
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert r.returncode in (0, 1), r.stderr
    assert not ring_dir.exists()
