"""The run session is the one way in: the Python API gates side effects exactly like ``byteor run``
and runs LaneGraph specs; the entry points start no executor themselves; output files show finished
messages while a run goes on; a bad input is reported after everything before it left egress."""

from __future__ import annotations

import ast
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from byteor import Pipeline, PolicyRefused, UsageError, load_spec_file, spec_hash
from byteor.edges import CollectSink, FileSource, IterableSource
from byteor.policy.audit import read_policy_audit
from byteor.runtime.session import RunOptions, RunSession, default_policy_audit_path
from conftest import BIN, ROOT, chain_spec_text, mode_cli_args
from policy_support import HttpTarget, new_signer, write_key_set, write_lanegraph_spec, write_spec

SRC = ROOT / "src" / "byteor"


def _audit(spec_path: Path) -> dict[str, Any]:
    spec = load_spec_file(spec_path)
    return read_policy_audit(default_policy_audit_path(spec, spec_hash(spec), str(spec_path)))


@pytest.mark.parametrize("sp", [True, False])
def test_python_api_gates_side_effects_like_the_command_line(sp: bool, http_target: HttpTarget, tmp_path: Path,
                                                             ring_dir: Path, cli: Any) -> None:
    spec_path = write_spec(tmp_path, f"http_post:{http_target.base}/hook")
    ring = None if sp else str(ring_dir)
    with pytest.raises(PolicyRefused, match="RequireApproval"):
        Pipeline.open(spec_path, sp=sp, ring_path=ring, posture="prod")
    assert http_target.recorder.posts() == []
    from_api = _audit(spec_path)
    assert from_api["enforced"] is True and from_api["mode"] == "prod"
    assert [d["decision"] for d in from_api["decisions"]] == ["RequireApproval"]
    r = cli("run", spec_path, *(["--sp"] if sp else [f"--ring-path={ring_dir}"]), "--input-ascii=x", "--env=prod")
    assert r.returncode == 4 and "RequireApproval" in r.stderr
    assert _audit(spec_path) == from_api  # the same record, field for field

    signer = new_signer("k1")
    keys = write_key_set(tmp_path / "keys.json", signer)
    cred = signer.issue(spec_hash(load_spec_file(spec_path)), "prod", ["http_post"])
    with Pipeline.open(spec_path, sp=sp, ring_path=ring, posture="prod", approval=cred,
                       approval_key_set=str(keys), wait="block") as p:
        p.publish(b"approved")
    assert list(p.outputs()) == [b"approved"]
    assert [post.body for post in http_target.recorder.posts()] == [b"approved"]
    allowed = _audit(spec_path)
    assert [d["decision"] for d in allowed["decisions"]] == ["Allow"]
    assert not ring_dir.exists()


def test_python_api_runs_lanegraph_with_side_effects_gated(http_target: HttpTarget, tmp_path: Path,
                                                           ring_dir: Path) -> None:
    spec_path = write_lanegraph_spec(tmp_path, f"http_post:{http_target.base}/lg")
    with pytest.raises(PolicyRefused):
        Pipeline.open(spec_path, ring_path=str(ring_dir), posture="staging")
    with Pipeline.open(spec_path, ring_path=str(ring_dir), wait="block", journal_dir=str(tmp_path / "j")) as p:
        p.publish_many([b"a", b"b"])
    assert list(p.outputs()) == [b"a", b"b"]
    assert sorted(post.body for post in http_target.recorder.posts()) == [b"a", b"b"]
    summary = p.close()
    assert summary["target"] == "LaneGraph" and summary["messages_out"] == 2
    assert summary["side_effect_counts"]["by_decision"] == {"Allow": 2}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("entry", ["cli/run.py", "runtime/pipeline.py", "replay/_engine.py",
                                   "runtime/lanegraph/__init__.py"])
def test_entry_points_start_no_executor_themselves(entry: str) -> None:
    """Only the run session builds and drives executors; an entry point that imports one is
    orchestrating on its own again."""
    names = _imports(SRC / entry)
    executors = {"mp", "sp", "supervisor", "MpExecutor", "SpExecutor", "MpGraph", "SpGraph", "Supervisor"}
    assert not names & executors, names & executors
    assert any("session" in n for n in names)


@pytest.mark.parametrize("mode", ["sp", "mp", "lanegraph-mp"])
def test_output_file_shows_finished_messages_while_the_run_goes_on(mode: str, tmp_path: Path,
                                                                   ring_dir: Path) -> None:
    spec = tmp_path / "live.kv"
    spec.write_text(chain_spec_text(mode, ["add_u8"]))
    out = tmp_path / "out.txt"
    proc = subprocess.Popen([str(BIN / "byteor"), "run", str(spec), *mode_cli_args(mode, ring_dir),
                             f"--output-file={out}", "--output=lines"], stdin=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env={"PATH": str(BIN)})
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(b"m%d\n" % i for i in range(10)))
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        expected = b"".join(bytes(b + 1 for b in b"m%d" % i) + b"\n" for i in range(10))
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes() != expected):
            time.sleep(0.05)
        assert out.read_bytes() == expected and proc.poll() is None  # still running: stdin is open
        # once the messages are through, the file has them within the flush bound (1 s, flushed every 0.2 s)
        proc.stdin.write(b"late\n")
        proc.stdin.flush()
        t0 = time.monotonic()
        while out.read_bytes() == expected and time.monotonic() - t0 < 5:
            time.sleep(0.02)
        assert out.read_bytes() == expected + bytes(b + 1 for b in b"late") + b"\n"
        assert time.monotonic() - t0 < 1.5, "a finished message reached the file only after the flush bound"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.parametrize("sp", [True, False])
def test_a_bad_input_is_reported_after_everything_before_it_left(sp: bool, tmp_path: Path, ring_dir: Path) -> None:
    src = tmp_path / "in.hex"
    src.write_text("".join(f"{i:02x}\n" for i in range(50)) + "zz\n" + "ff\n")
    session = RunSession(write_spec(tmp_path, name="bad"), RunOptions(sp=sp, ring_path=str(ring_dir), wait="block"))
    sink = CollectSink()
    with session:
        session.start(sink)
        with pytest.raises(UsageError, match="line 51 is not valid hex"):
            session.run(FileSource(str(src), "hex"))
    assert sink.items == [bytes([i]) for i in range(50)]
    assert not ring_dir.exists()


def test_an_oversized_message_is_reported_after_everything_before_it_left(tmp_path: Path, ring_dir: Path) -> None:
    session = RunSession(write_spec(tmp_path, name="big"), RunOptions(ring_path=str(ring_dir), wait="block"))
    sink = CollectSink()
    items = [b"ok%d" % i for i in range(20)] + [b"x" * 300, b"never"]
    with session:
        session.start(sink)
        with pytest.raises(UsageError, match=r"message 20 is 300 bytes, larger than pipeline\.ring\.slot_bytes=256"):
            session.run(IterableSource(items))
    assert sink.items == items[:20]


def test_positions_are_committed_in_order_only_after_egress(tmp_path: Path, ring_dir: Path) -> None:
    """A source sees commits of its batches in order, each after its messages reached the sink."""
    sink = CollectSink()

    class Counting(IterableSource):
        def __init__(self, items: list[bytes]) -> None:
            super().__init__(items)
            self.committed: list[Any] = []

        def commit(self, position: Any) -> None:
            assert len(sink.items) >= position  # nothing is committed before it left egress
            self.committed.append(position)

    source = Counting([b"m%d" % i for i in range(10_000)])
    session = RunSession(write_spec(tmp_path, name="commits"), RunOptions(ring_path=str(ring_dir), wait="block"))
    with session:
        session.start(sink)
        session.run(source)
    assert source.committed == sorted(source.committed) and source.committed[-1] == 10_000
    assert len(sink.items) == 10_000


@pytest.mark.parametrize("mode", ["mp", "lanegraph-mp"])
def test_a_running_session_describes_itself_to_observers(mode: str, tmp_path: Path, ring_dir: Path,
                                                          cli: Any) -> None:
    """session_state.json beside the rings or lanes: identity, counters and edges, gone at the end."""
    spec = tmp_path / "observed.kv"
    spec.write_text(chain_spec_text(mode, ["identity"], name="observed"))
    out = tmp_path / "out.txt"
    proc = subprocess.Popen([str(BIN / "byteor"), "run", str(spec), *mode_cli_args(mode, ring_dir),
                             f"--output-file={out}"], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={"PATH": str(BIN)})
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"a\nb\nc\n")
        proc.stdin.flush()
        state_file = ring_dir / "session_state.json"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if state_file.exists():
                r = cli("snapshot", f"--{'lane' if mode.startswith('lanegraph') else 'ring'}-path={ring_dir}", "--json")
                session = json.loads(r.stdout)["session"] if r.returncode == 0 else None
                if session and session["messages_out"] == 3:
                    break
            time.sleep(0.1)
        assert session is not None and session["messages_out"] == 3
        assert (session["name"], session["pid"], session["posture"]) == ("observed", proc.pid, "dev")
        assert session["spec_hash"] == spec_hash(load_spec_file(spec))
        assert [s["name"] for s in session["sources"]] == ["stdin"]
        assert [s["name"] for s in session["sinks"]] == [str(out)]
        text = cli("snapshot", f"--{'lane' if mode.startswith('lanegraph') else 'ring'}-path={ring_dir}")
        assert "observed" in text.stdout and "stdin" in text.stdout
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert not state_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
