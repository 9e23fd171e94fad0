"""A LaneGraph run by the real multi-process runtime: bundle it live (state + journal lane), then
replay the journal records the runtime wrote."""

from __future__ import annotations

import hashlib
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

from byteor.artifacts import read_incident_bundle, read_replay_audit
from byteor.lanes.journal import JournalReader
from byteor.spec.kv import decode_kv, spec_hash

BIN = Path(sys.executable).parent
BATCH = 4096


def _spec(name: str) -> str:
    return (
        f"pipeline.name={name}\npipeline.target=LaneGraph\n"
        "pipeline.lanes.0.name=in\npipeline.lanes.0.kind=events\n"
        "pipeline.lanes.1.name=j\npipeline.lanes.1.kind=journal\npipeline.lanes.1.segment_bytes=65536\n"
        "pipeline.lanes.2.name=out\npipeline.lanes.2.kind=events\n"
        "pipeline.endpoints.0.name=src\npipeline.endpoints.0.direction=ingress\npipeline.endpoints.0.lane=in\n"
        "pipeline.endpoints.1.name=sink\npipeline.endpoints.1.direction=egress\npipeline.endpoints.1.lane=out\n"
        "pipeline.roles.0.name=rec\npipeline.roles.0.kind=bridge\n"
        "pipeline.roles.0.inputs.0=in\npipeline.roles.0.outputs.0=j\n"
        "pipeline.roles.1.name=bump\npipeline.roles.1.kind=stage\n"
        "pipeline.roles.1.inputs.0=j\npipeline.roles.1.outputs.0=out\npipeline.roles.1.op=add_u8\n"
    )


def _wait(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def names() -> Iterator[tuple[str, Path]]:
    tag = uuid.uuid4().hex[:8]
    lane_path = Path("/dev/shm") / f"byteor-h7-lg-{tag}"
    name = f"h7lg{tag}"
    yield name, lane_path
    shutil.rmtree(lane_path, ignore_errors=True)
    for d in Path("/var/tmp/byteor").glob(f"{name}-*"):
        shutil.rmtree(d, ignore_errors=True)


def _records(journal: Path) -> list[bytes]:
    if not journal.is_dir():
        return []
    return list(JournalReader(journal).records())


def test_live_lanegraph_bundle_then_replay(tmp_path: Path, names: tuple[str, Path]) -> None:
    name, lane_path = names
    spec = tmp_path / "spec.kv"
    spec.write_text(_spec(name))
    shash = spec_hash(decode_kv(spec.read_bytes()))
    journal = Path("/var/tmp/byteor") / f"{name}-{shash.split(':')[1][:8]}" / "journal" / "j"
    proc = subprocess.Popen(
        [
            str(BIN / "byteor"),
            "run",
            f"--spec={spec}",
            "--input=-",
            f"--lane-path={lane_path}",
            "--wait=block",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    sent: list[bytes] = []

    def send(line: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + b"\n")
        proc.stdin.flush()
        sent.append(line)

    try:
        for word in (b"alpha", b"beta", b"gamma"):
            send(word)
        # The LaneGraph runner reads its input in batches of up to 4096 messages and refreshes
        # lane_graph_state.json between batches: send more than one batch, then keep the input open.
        for i in range(BATCH + 8):
            send(b"m%d" % i)
        _wait((lane_path / "lane_graph_state.json").exists, "the lane graph state")
        _wait(lambda: len(_records(journal)) >= BATCH, "a batch of journal records")

        out = tmp_path / "bundle"
        res = subprocess.run(
            [
                str(BIN / "byteor"),
                "incident-bundle",
                f"--spec={spec}",
                f"--out={out}",
                f"--lane-path={lane_path}",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        bundle = read_incident_bundle(out)
        assert bundle.lane_graph_state is not None
        assert {lane["name"] for lane in bundle.lane_graph_state["lanes"]} >= {"in", "j", "out"}
        copied = list(JournalReader(bundle.journal_path("j")).records())
        assert len(copied) >= 3 and copied == sent[: len(copied)]

        audit_path = tmp_path / "audit.json"
        res = subprocess.run(
            [
                str(BIN / "byteor"),
                "replay",
                f"--bundle={out}",
                "--journal-lane=j",
                "--last-n=2",
                f"--out={audit_path}",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["outputs"] == 2
        audit = read_replay_audit(audit_path)
        assert audit.spec_sha256 == shash and audit.actions == ()
        assert audit.input.scanned_records == len(copied)
        assert audit.input.sample_sha256 == tuple(
            "sha256:" + hashlib.sha256(r).hexdigest() for r in copied[-2:]
        )
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert proc.stdout is not None
        bumped = [bytes((b + 1) & 0xFF for b in m).hex().encode() for m in sent]
        assert proc.stdout.read().split() == bumped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
