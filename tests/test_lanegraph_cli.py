"""LaneGraph through the command line: run --sp / multi-process, snapshot --lane-path, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from byteor.lanes.journal import JournalReader

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lanegraph.kv"


def byteor(*args: str, env_extra: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, **env_extra)
    return subprocess.run([str(Path(sys.executable).parent / "byteor"), *args], input=stdin, capture_output=True,
                          env=env, timeout=120, check=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"BYTEOR_JOURNAL_DIR": str(tmp_path / "journals")}


def test_run_sp_one_message(env: dict[str, str]) -> None:
    proc = byteor("run", "--sp", f"--spec={EXAMPLE}", "--input-hex=0aff", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == "0b00\n"  # add_u8 delta 1


@pytest.mark.parametrize("sp", [True, False])
def test_run_lines_and_journal(sp: bool, tmp_path: Path, env: dict[str, str]) -> None:
    lanes = tmp_path / "lanes"
    args = ["run", f"--spec={EXAMPLE}", "--input-format=lines", "--output=lines", f"--lane-path={lanes}",
            "--wait=block"]
    if sp:
        args.insert(1, "--sp")
    lines = b"".join(b"msg-%d\n" % i for i in range(300))
    proc = byteor(*args, env_extra=env, stdin=lines)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [bytes(b + 1 for b in b"msg-%d" % i).decode() for i in range(300)]
    journals = list((tmp_path / "journals").iterdir())
    assert len(journals) == 1
    assert len(list(JournalReader(journals[0] / "audit").records())) == 300
    if not sp:
        assert not lanes.exists()  # the multi-process run leaves nothing in its lane path


def test_snapshot_lane_path(tmp_path: Path, env: dict[str, str]) -> None:
    lanes = tmp_path / "lanes"
    proc = byteor("run", "--sp", f"--spec={EXAMPLE}", "--input-ascii=hello", f"--lane-path={lanes}",
                  env_extra=env)
    assert proc.returncode == 0, proc.stderr
    snap = byteor("snapshot", f"--lane-path={lanes}", "--json", env_extra=env)
    assert snap.returncode == 0, snap.stderr
    state = json.loads(snap.stdout)
    assert state["state_v"] == 1 and {lane["name"] for lane in state["lanes"]} == {"in", "bumped", "audit"}
    text = byteor("snapshot", f"--lane-path={lanes}", env_extra=env)
    assert text.returncode == 0 and b"bumped" in text.stdout and b"fanout" in text.stdout
    missing = byteor("snapshot", f"--lane-path={tmp_path / 'nope'}", env_extra=env)
    assert missing.returncode == 1 and b"lane_graph_state.json" in missing.stderr
    assert b"Traceback" not in missing.stderr


def test_bad_fsync_posture_is_a_usage_error(env: dict[str, str]) -> None:
    proc = byteor("run", "--sp", f"--spec={EXAMPLE}", "--input-hex=00",
                  env_extra=dict(env, BYTEOR_JOURNAL_FSYNC="sometimes"))
    assert proc.returncode == 2 and b"fsync posture 'sometimes'" in proc.stderr
