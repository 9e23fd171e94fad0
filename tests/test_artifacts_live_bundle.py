"""Bundles from a running multi-process pipeline, after one of its stages was killed, and after the
whole pipeline crashed (from the ring files left behind)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from byteor.artifacts import read_incident_bundle
from byteor.ops import DoctorOptions, run_doctor
from byteor.shm import take_snapshot

BIN = Path(sys.executable).parent
SPEC = (
    "pipeline.name=live\npipeline.target=SingleRing\n"
    "pipeline.stages.0.id=a\npipeline.stages.0.op=add_u8\n"
    "pipeline.stages.1.id=b\npipeline.stages.1.op=add_u8\npipeline.stages.1.depends_on.0=0\n"
)


def _wait(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def ring_dir() -> Iterator[Path]:
    path = Path("/dev/shm") / f"byteor-h7-test-{uuid.uuid4().hex[:8]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _bundle(spec: Path, out: Path, ring: Path) -> dict[str, object]:
    res = subprocess.run(
        [str(BIN / "byteor"), "incident-bundle", f"--spec={spec}", f"--out={out}", f"--ring-path={ring}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    snap: dict[str, object] = json.loads((out / "single_ring_snapshot.json").read_text())
    assert read_incident_bundle(out).single_ring_snapshot == snap
    return snap


def _participants(snap: dict[str, object]) -> list[dict[str, object]]:
    parts = snap["participants"]
    assert isinstance(parts, list)
    return parts


def _pids(snap: dict[str, object]) -> set[int]:
    return {int(str(p["pid"])) for p in _participants(snap)}


def _gone(pid: int) -> bool:
    """The process exited (a zombie its supervisor has not reaped yet counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_bundle_live_then_stage_killed_then_crashed(tmp_path: Path, ring_dir: Path) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text(SPEC)
    proc = subprocess.Popen(
        [
            str(BIN / "byteor"),
            "run",
            f"--spec={spec}",
            "--input=-",
            f"--ring-path={ring_dir}",
            "--wait=block",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None
        ring = ring_dir / "shard-0.ring"
        _wait(ring.exists, "the ring file")
        proc.stdin.write(b"one\ntwo\nthree\n")
        proc.stdin.flush()
        _wait(lambda: take_snapshot(str(ring)).cursor >= 2, "three published messages")
        # both stage processes registered (they start after the ring exists: under load, later than
        # the messages are published)
        _wait(lambda: len({p.pid for p in take_snapshot(str(ring)).participants} - {proc.pid}) >= 2,
              "both stage processes")

        # 1. live: every participant alive, the manifest names the same spec hash as the ring
        live = _bundle(spec, tmp_path / "live", ring_dir)
        manifest = read_incident_bundle(tmp_path / "live").manifest
        assert manifest is not None and live["spec_hash"] == manifest["spec_sha256"]
        assert all(p["alive"] for p in _participants(live))
        stage_pids = sorted(_pids(live) - {proc.pid})
        assert stage_pids, live

        # 2. one stage killed: the bundle still works (the supervisor may already have restarted it)
        os.kill(stage_pids[0], signal.SIGKILL)
        _wait(lambda: _gone(stage_pids[0]), "the killed stage to exit")
        killed = _bundle(spec, tmp_path / "killed", ring_dir)
        assert _participants(killed)
        assert killed["cursor"] == live["cursor"]

        # 3. the whole pipeline crashed: a bundle from the files left behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _wait(lambda: all(_gone(p) for p in _pids(killed)), "every pipeline process to exit")
        crashed = _bundle(spec, tmp_path / "crashed", ring_dir)
        # Every process has exited. This container's init does not reap orphans, so an exited stage
        # can linger as a zombie, which byteor.shm still reports alive; a zombie is gone all the same.
        assert all(not p["alive"] or _gone(int(str(p["pid"]))) for p in _participants(crashed))
        assert crashed["cursor"] == live["cursor"]
        stale = {c.name: c for c in run_doctor(DoctorOptions(byteor_shm_dir=str(ring_dir))).checks}[
            "stale_shm"
        ]
        if not any(p["alive"] for p in _participants(crashed)):
            assert stale.status == "warn" and str(ring) in stale.detail
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if proc.stdin is not None:
            proc.stdin.close()
