"""``byteor top``: the live view in a real terminal (a pty), ``--once --json`` against ``snapshot``."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obs_support import RunningPipeline, sample, wait_until

BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _unique_spec(src: Path, dest_dir: Path) -> tuple[Path, str]:
    """``src`` under a name no other test's pipeline has (``top`` finds pipelines by name)."""
    name = f"top{uuid.uuid4().hex[:10]}"
    text = re.sub(r"(?m)^pipeline\.name=.*$", f"pipeline.name={name}", src.read_text())
    dest = dest_dir / f"{name}.kv"
    dest.write_text(text)
    return dest, name


def _cli_json(cli: Callable[..., Any], *args: str) -> dict[str, Any]:
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _without(obj: Any, keys: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _without(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_without(v, keys) for v in obj]
    return obj


_MOVING = {"taken_unix_ms", "heartbeat_age_ms", "updated_unix_ms"}


def test_top_once_json_matches_snapshot_singlering(run_pipeline: Callable[..., RunningPipeline],
                                                   examples: Path, tmp_path: Path, cli: Callable[..., Any]) -> None:
    spec, name = _unique_spec(examples / "chain.kv", tmp_path)
    run = run_pipeline(spec)
    run.send([f"t{i}" for i in range(25)])
    wait_until(lambda: sample(run.scrape(), "byteor_messages_out_total") == 25, "25 messages out")
    time.sleep(1.2)  # session_state.json refreshed after the last message
    snap = _cli_json(cli, "snapshot", f"--ring-path={run.ring_dir}", "--json")
    top = _cli_json(cli, "top", name, "--once", "--json", "--interval=0.1")
    for key in ("rings", "session", "tuning"):
        assert _without(top[key], _MOVING) == _without(snap[key], _MOVING), key
    assert top["pipeline"] == name and top["ready"] is True and top["not_ready"] == []
    assert [(s["stage"], s["processed"], s["lag"], s["state"]) for s in top["stages"]] == \
        [("read", 25, 0, "running"), ("bump", 25, 0, "running"), ("emit", 25, 0, "running")]
    assert top["messages_in"] == top["messages_out"] == 25
    assert top["rates"]["interval_s"] >= 0.1
    by_path = _cli_json(cli, "top", str(run.ring_dir), "--once", "--json", "--interval=0.1")
    assert by_path["pipeline"] == name
    rc, _out, err = run.finish()
    assert rc == 0, err


def test_top_once_json_matches_snapshot_lanegraph(run_pipeline: Callable[..., RunningPipeline],
                                                  examples: Path, tmp_path: Path, cli: Callable[..., Any]) -> None:
    spec, name = _unique_spec(examples / "lanegraph.kv", tmp_path)
    run = run_pipeline(spec, f"--journal-dir={tmp_path / 'journal'}")
    run.send([f"l{i}" for i in range(30)])
    wait_until(lambda: sample(run.scrape(), "byteor_lane_written_total", lane="audit") == 30, "30 journaled")
    time.sleep(1.2)
    snap = _cli_json(cli, "snapshot", f"--lane-path={run.ring_dir}", "--json")
    top = _cli_json(cli, "top", name, "--once", "--json", "--interval=0.1")
    for key in ("lanes", "roles", "session", "tuning"):
        assert _without(top[key], _MOVING) == _without(snap[key], _MOVING), key
    assert {s["stage"]: s["processed"] for s in top["stages"]} == {"bump": 30, "to-journal": 30}
    assert top["journals"][0]["lane"] == "audit" and top["journals"][0]["records"] == 30
    rc, _out, err = run.finish()
    assert rc == 0, err


def _read_pty(fd: int, seconds: float, until: str | None = None) -> str:
    """What the terminal showed within ``seconds`` (or until ``until`` appeared), escapes removed."""
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if until is not None and until in ANSI.sub("", out.decode("utf-8", "replace")):
            break
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    return ANSI.sub("", out.decode("utf-8", "replace"))


def test_top_renders_live_in_a_terminal(run_pipeline: Callable[..., RunningPipeline], examples: Path,
                                        tmp_path: Path) -> None:
    spec, name = _unique_spec(examples / "chain.kv", tmp_path)
    run = run_pipeline(spec)
    run.send([f"v{i}" for i in range(10)])
    wait_until(lambda: sample(run.scrape(), "byteor_messages_out_total") == 10, "10 messages out")
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    top = subprocess.Popen([str(BIN / "byteor"), "top", name, "--interval=0.2"], stdin=slave, stdout=slave,
                           stderr=slave, env=env, close_fds=True)
    os.close(slave)
    try:
        first = _read_pty(master, 30.0, until="participants")
        run.send([f"w{i}" for i in range(15)])
        later = _read_pty(master, 30.0, until="in 25 ")
        screen = first + later
        for text in (name, "READY", "stages", "read", "bump", "emit", "processed", "lag", "restarts", "rings",
                     "participants", "producer", "egress"):
            assert text in screen, (text, screen[-3000:])
        assert "in 25 " in later, later[-2000:]
        top.send_signal(signal.SIGINT)
        assert top.wait(timeout=30) == 0
    finally:
        if top.poll() is None:
            top.kill()
            top.wait(timeout=30)
        os.close(master)
    rc, _out, err = run.finish()
    assert rc == 0, err


def test_top_exits_when_the_run_ends(run_pipeline: Callable[..., RunningPipeline], examples: Path,
                                     tmp_path: Path) -> None:
    spec, name = _unique_spec(examples / "chain.kv", tmp_path)
    run = run_pipeline(spec)
    top = subprocess.Popen([str(BIN / "byteor"), "top", name, "--interval=0.1"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    rc, _out, err = run.finish()
    assert rc == 0, err
    out, top_err = top.communicate(timeout=30)
    assert top.returncode == 0, top_err
    assert "the run has ended" in out


def test_top_bad_targets_and_options_are_usage_errors(cli: Callable[..., Any], tmp_path: Path) -> None:
    proc = cli("top", f"no-such-pipeline-{uuid.uuid4().hex[:8]}", "--once")
    assert proc.returncode == 2 and "no running pipeline named" in proc.stderr
    proc = cli("top", str(tmp_path / "missing" / "dir"), "--once")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = cli("top", str(tmp_path), "--once")
    assert proc.returncode == 2 and "no running pipeline there" in proc.stderr
    proc = cli("top", str(tmp_path), "--json")
    assert proc.returncode == 2 and "with --once" in proc.stderr
    proc = cli("top", str(tmp_path), "--once", "--interval=0")
    assert proc.returncode == 2 and "--interval" in proc.stderr
    for p in (proc,):
        assert "Traceback" not in p.stderr
