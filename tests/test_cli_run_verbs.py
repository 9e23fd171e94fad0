"""The `run` and `snapshot` verbs through the real console script."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from byteor.shm import take_snapshot
from conftest import BIN, CliRunner

CHAIN = """\
pipeline.name=clichain
pipeline.target=SingleRing
pipeline.ring.capacity=16
pipeline.ring.slot_bytes=32
pipeline.stages.0.id=a
pipeline.stages.1.id=b
pipeline.stages.1.op=add_u8
pipeline.stages.1.delta=1
pipeline.stages.1.depends_on.0=0
"""


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    path = tmp_path / "chain.kv"
    path.write_text(CHAIN)
    return path


@pytest.fixture(params=["sp", "mp"])
def mode_args(request: pytest.FixtureRequest, ring_dir: Path) -> list[str]:
    return ["--sp"] if request.param == "sp" else [f"--ring-path={ring_dir}", "--wait=block"]


def test_one_shot_hex_and_ascii(cli: CliRunner, chain: Path, mode_args: list[str]) -> None:
    r = cli("run", chain, *mode_args, "--input-hex=00ff41")
    assert (r.returncode, r.stdout, r.stderr) == (0, "010042\n", "")
    r = cli("run", f"--spec={chain}", *mode_args, "--input-ascii", "HAL", "--output=ascii")
    assert (r.returncode, r.stdout) == (0, "IBM\n")


@pytest.mark.parametrize("bad", ["0g", "abc", "zz"])
def test_bad_input_hex_is_usage_error(cli: CliRunner, chain: Path, bad: str) -> None:
    r = cli("run", chain, "--sp", f"--input-hex={bad}")
    assert r.returncode == 2
    assert r.stdout == ""
    assert "--input-hex is not valid hex" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_two_inputs_is_usage_error(cli: CliRunner, chain: Path) -> None:
    r = cli("run", chain, "--sp", "--input-hex=00", "--input-ascii=a")
    assert r.returncode == 2 and "give only one input" in r.stderr


def test_missing_spec_and_input_file(cli: CliRunner, chain: Path, tmp_path: Path) -> None:
    r = cli("run", tmp_path / "nope.kv", "--sp", "--input-hex=00")
    assert r.returncode == 2
    r = cli("run", chain, "--sp", f"--input={tmp_path / 'nope.txt'}")
    assert r.returncode == 2 and "--input file not found" in r.stderr


def test_unknown_resolver_family_exit_3_before_anything_runs(cli: CliRunner, tmp_path: Path,
                                                             ring_dir: Path) -> None:
    spec = tmp_path / "bad.kv"
    spec.write_text(CHAIN + "pipeline.stages.2.id=c\npipeline.stages.2.op=resolver\n"
                    "pipeline.stages.2.resolver_key=nosuchfamily:x\npipeline.stages.2.depends_on.0=1\n")
    out = tmp_path / "out.txt"
    r = cli("run", spec, f"--ring-path={ring_dir}", "--input-hex=00", f"--output-file={out}")
    assert r.returncode == 3
    assert "pipeline.stages.2.resolver_key" in r.stderr
    assert not ring_dir.exists() and not out.exists()


def test_unimportable_py_stage_exit_3(cli: CliRunner, tmp_path: Path, ring_dir: Path) -> None:
    spec = tmp_path / "bad.kv"
    spec.write_text(CHAIN + "pipeline.stages.2.id=c\npipeline.stages.2.op=resolver\n"
                    "pipeline.stages.2.resolver_key=py:no_such_mod_q:f\npipeline.stages.2.depends_on.0=1\n")
    r = cli("run", spec, f"--ring-path={ring_dir}", "--input-hex=00")
    assert r.returncode == 3
    assert "pipeline.stages.2.resolver_key" in r.stderr and "no_such_mod_q" in r.stderr
    assert not ring_dir.exists()


def _len32(msgs: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(m)) + m for m in msgs)


@pytest.mark.parametrize("fmt", ["lines", "hex", "len32"])
def test_stream_input_formats_and_output_file(cli: CliRunner, chain: Path, tmp_path: Path,
                                              mode_args: list[str], fmt: str) -> None:
    msgs = [f"msg-{i}".encode() for i in range(500)]
    src = tmp_path / "in.dat"
    if fmt == "lines":
        src.write_bytes(b"".join(m + b"\n" for m in msgs))
    elif fmt == "hex":
        src.write_text("".join(m.hex() + "\n" for m in msgs))
    else:
        src.write_bytes(_len32(msgs))
    out = tmp_path / "out.txt"
    r = cli("run", chain, *mode_args, f"--input={src}", f"--input-format={fmt}", f"--output-file={out}",
            "--output=lines")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "500 in, 500 out" in r.stderr
    assert out.read_bytes() == b"".join(bytes((b + 1) & 0xFF for b in m) + b"\n" for m in msgs)


def test_stdin_raw_output_and_json_summary(cli: CliRunner, chain: Path, mode_args: list[str]) -> None:
    r = cli("run", chain, *mode_args, "--json", input="ab\ncd\n")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["outputs"] == ["6263", "6465"]
    assert (summary["messages_in"], summary["messages_out"], summary["dropped"]) == (2, 2, 0)
    assert summary["spec_hash"].startswith("sha256:")
    assert summary["executor"] == ("sp" if "--sp" in mode_args else "mp")


def test_bad_stream_input_is_usage_error(cli: CliRunner, chain: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.hex"
    src.write_text("0011\nnothex\n")
    r = cli("run", chain, "--sp", f"--input={src}", "--input-format=hex")
    assert r.returncode == 2 and "--input line 2 is not valid hex" in r.stderr
    src.write_bytes(struct.pack("<I", 10) + b"abc")
    r = cli("run", chain, "--sp", f"--input={src}", "--input-format=len32")
    assert r.returncode == 2 and "announces 10 bytes, only 3 follow" in r.stderr


def test_message_larger_than_slot_is_usage_error(cli: CliRunner, chain: Path, mode_args: list[str]) -> None:
    r = cli("run", chain, *mode_args, "--input-hex=" + "00" * 33)
    assert r.returncode == 2
    assert "larger than pipeline.ring.slot_bytes=32" in r.stderr


def test_sp_on_the_examples(cli: CliRunner, examples: Path) -> None:
    expected = {"chain.kv": "020304\n", "diamond.kv": "040506\n", "example.kv": "010203\n"}
    for name, want in expected.items():
        r = cli("run", examples / name, "--sp", "--input-hex=010203")
        assert (r.returncode, r.stdout) == (0, want), (name, r.stderr)
    r = cli("run", examples / "sharded.kv", "--sp", "--input-hex=0102030405")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1


def test_policy_refuses_side_effects_without_approval(cli: CliRunner, tmp_path: Path,
                                                      mode_args: list[str]) -> None:
    spec = tmp_path / "post.kv"
    spec.write_text(CHAIN + "pipeline.stages.2.id=post\npipeline.stages.2.op=resolver\n"
                    "pipeline.stages.2.resolver_key=http_post:http://127.0.0.1:9/hook\n"
                    "pipeline.stages.2.depends_on.0=1\n")
    r = cli("run", spec, *mode_args, "--input-hex=00", "--env=prod")
    assert r.returncode == 4
    assert "RequireApproval" in r.stderr and r.stdout == ""
    r = cli("run", spec, *mode_args, "--env=prod", "--dry-run", "--json", input="a\nb\n")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["outputs"] == ["62", "63"]
    assert [e["decision"] for e in summary["side_effects"]] == ["DryRunOnly", "DryRunOnly"]
    assert summary["side_effects"][0]["action"] == "http_post"


def _wait_for(pred: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_sigterm_drains_and_leaves_no_files(chain: Path, ring_dir: Path, tmp_path: Path,
                                            cli: CliRunner) -> None:
    out = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    proc = subprocess.Popen([str(BIN / "byteor"), "run", str(chain), f"--ring-path={ring_dir}", "--wait=block",
                             f"--output-file={out}", "--output=lines"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(b"line%d\n" % i for i in range(100)))
        proc.stdin.flush()
        ring = ring_dir / "shard-0.ring"
        _wait_for(lambda: ring.exists() and take_snapshot(str(ring)).cursor == 99)
        # snapshot while it runs: cursor, gating per stage, egress, live participants
        r = cli("snapshot", f"--ring-path={ring_dir}", "--json")
        assert r.returncode == 0, r.stderr
        snap = json.loads(r.stdout)["rings"][0]
        assert snap["cursor"] == 99 and len(snap["stages"]) == 2 and snap["egress"] is not None
        assert sum(p["alive"] for p in snap["participants"]) >= 3
        r = cli("snapshot", f"--ring-path={ring_dir}")
        assert r.returncode == 0 and "egress" in r.stdout and "stage 1" in r.stdout
        proc.send_signal(signal.SIGTERM)  # stdin stays open: the reader is blocked in read()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"stopped by SIGTERM (drained)" in err
    assert out.read_bytes() == b"".join(bytes((b + 1) & 0xFF for b in b"line%d" % i) + b"\n" for i in range(100))
    assert not (ring_dir / "shard-0.ring").exists()


def test_snapshot_bad_paths(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("snapshot", f"--ring-path={tmp_path / 'none'}")
    assert r.returncode == 2 and "does not exist" in r.stderr
    foreign = tmp_path / "foreign.ring"
    foreign.write_bytes(b"NOTARING" * 100)
    r = cli("snapshot", f"--ring-path={foreign}")
    assert r.returncode == 1 and str(foreign) in r.stderr and "Traceback" not in r.stderr
    r = cli("snapshot")
    assert r.returncode == 2


def test_snapshot_out_file_round_trips(tmp_path: Path, ring_dir: Path, cli: CliRunner) -> None:
    from byteor.shm import create_ring, read_ring_snapshot, unlink

    path = ring_dir / "shard-0.ring"
    ring = create_ring(str(path), 8, 16, [0, 1], "sha256:" + "ab" * 32)
    try:
        ring.publish(b"x")
        dest = tmp_path / "single_ring_snapshot.json"
        r = cli("snapshot", f"--ring-path={path}", f"--out={dest}")
        assert r.returncode == 0, r.stderr
        snap = read_ring_snapshot(dest)
        assert snap.cursor == 0 and snap.spec_hash == "sha256:" + "ab" * 32
    finally:
        ring.close()
        unlink(str(path))
        os.rmdir(ring_dir)


def test_lanegraph_dispatch(cli: CliRunner, examples: Path, tmp_path: Path) -> None:
    # its own journal directory: the default one is shared by every run of this spec on the machine
    r = cli("run", examples / "lanegraph.kv", "--sp", "--input-hex=0102", f"--journal-dir={tmp_path}")
    assert (r.returncode, r.stdout) == (0, "0203\n"), r.stderr


def test_run_help_lists_options(cli: CliRunner) -> None:
    r = cli("run", "--help")
    assert r.returncode == 0
    for opt in ("--sp", "--input-hex", "--input-format", "--output-file", "--ring-path", "--wait", "--dry-run",
                "--approval-key-set", "--json"):
        assert opt in r.stdout


def test_stage_prints_do_not_corrupt_stdout(cli: CliRunner, tmp_path: Path, mode_args: list[str]) -> None:
    mod = f"noisy_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text("def noisy(slot, n):\n    print('hello from a stage')\n    return n\n")
    spec = tmp_path / "noisy.kv"
    spec.write_text(CHAIN + f"pipeline.stages.2.id=n\npipeline.stages.2.op=resolver\n"
                    f"pipeline.stages.2.resolver_key=py:{mod}:noisy\npipeline.stages.2.depends_on.0=1\n")
    r = cli("run", spec, *mode_args, env={"PYTHONPATH": str(tmp_path)}, input="a\nb\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "62\n63\n"
    assert r.stderr.count("hello from a stage") == 2


def test_failing_stage_exit_1_names_it(cli: CliRunner, tmp_path: Path, mode_args: list[str],
                                       ring_dir: Path) -> None:
    mod = f"failing_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text("def bad(slot, n):\n    raise ValueError('no thanks')\n")
    spec = tmp_path / "bad.kv"
    spec.write_text(CHAIN + f"pipeline.stages.2.id=picky\npipeline.stages.2.op=resolver\n"
                    f"pipeline.stages.2.resolver_key=py:{mod}:bad\npipeline.stages.2.depends_on.0=1\n")
    r = cli("run", spec, *mode_args, env={"PYTHONPATH": str(tmp_path)}, input="a\nb\n")
    assert r.returncode == 1
    assert "stage 2 'picky' failed" in r.stderr and "no thanks" in r.stderr
    assert "Traceback" not in r.stderr
    assert not ring_dir.exists()
