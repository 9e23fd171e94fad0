"""Default locations of a multi-process LaneGraph: lanes in ``/dev/shm/byteor/<name>-<hash8>/`` while it
runs (removed after), journal lanes on a real filesystem (``$BYTEOR_JOURNAL_DIR/<name>-<hash8>/``)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor.lanes.journal import JournalReader
from byteor.runtime.lanegraph import run_lanegraph
from byteor.spec.kv import spec_hash
from lanegraph_helpers import lanegraph


def test_default_lane_path_and_journal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"lgdef{uuid.uuid4().hex[:8]}"
    spec = lanegraph(
        name,
        [{"name": "a", "kind": "events"}, {"name": "j", "kind": "journal", "segment_bytes": 4096},
         {"name": "b", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "b")],
        [{"name": "w", "kind": "bridge", "inputs": ["a"], "outputs": ["j"]},
         {"name": "r", "kind": "bridge", "inputs": ["j"], "outputs": ["b"]}],
    )
    h8 = spec_hash(spec).split(":", 1)[1][:8]
    lanes = Path("/dev/shm/byteor") / f"{name}-{h8}"
    monkeypatch.setenv("BYTEOR_JOURNAL_DIR", str(tmp_path / "journals"))
    seen: list[set[str]] = []

    def source() -> Iterator[bytes]:
        seen.append(set(os.listdir(lanes)) if lanes.is_dir() else set())
        for i in range(50):
            yield b"m%d" % i

    got: list[bytes] = []
    try:
        run_lanegraph(spec, sp=False, inputs=source(), outputs=lambda ep, m: got.append(bytes(m)), wait="block")
    finally:
        leftover = lanes.exists()
        shutil.rmtree(lanes, ignore_errors=True)
    assert got == [b"m%d" % i for i in range(50)]
    assert {"a.events.ring", "b.events.ring", "spec.kv"} <= seen[0]  # the lanes lived there while it ran
    assert not leftover  # and nothing is left in /dev/shm after a clean end
    journal = tmp_path / "journals" / f"{name}-{h8}" / "j"
    assert list(JournalReader(journal).records()) == got
