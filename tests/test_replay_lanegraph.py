"""Replay of a LaneGraph journal lane: records enter at the lane and flow through its readers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from byteor.artifacts import read_replay_audit
from byteor.lanes.journal import JournalWriter
from byteor.replay import ReplayRequest, run_replay
from byteor.spec import load_spec_file, spec_hash

BIN = Path(sys.executable).parent

SPEC = """pipeline.name=lg
pipeline.target=LaneGraph
pipeline.lanes.0.name=in
pipeline.lanes.0.kind=events
pipeline.lanes.1.name=audit
pipeline.lanes.1.kind=journal
pipeline.lanes.1.segment_bytes=65536
pipeline.lanes.2.name=a
pipeline.lanes.2.kind=events
pipeline.lanes.3.name=b
pipeline.lanes.3.kind=events
pipeline.lanes.4.name=outa
pipeline.lanes.4.kind=events
pipeline.lanes.5.name=outb
pipeline.lanes.5.kind=events
pipeline.endpoints.0.name=src
pipeline.endpoints.0.direction=ingress
pipeline.endpoints.0.lane=in
pipeline.endpoints.1.name=sinka
pipeline.endpoints.1.direction=egress
pipeline.endpoints.1.lane=outa
pipeline.endpoints.2.name=sinkb
pipeline.endpoints.2.direction=egress
pipeline.endpoints.2.lane=outb
pipeline.roles.0.name=tap
pipeline.roles.0.kind=bridge
pipeline.roles.0.inputs.0=in
pipeline.roles.0.outputs.0=audit
pipeline.roles.1.name=split
pipeline.roles.1.kind=router
pipeline.roles.1.inputs.0=audit
pipeline.roles.1.outputs.0=a
pipeline.roles.1.outputs.1=b
pipeline.roles.1.route=round_robin
pipeline.roles.2.name=post-a
pipeline.roles.2.kind=stage
pipeline.roles.2.inputs.0=a
pipeline.roles.2.outputs.0=outa
pipeline.roles.2.op=resolver
pipeline.roles.2.resolver_key=http_post:http://127.0.0.1:9/a
pipeline.roles.3.name=bump-b
pipeline.roles.3.kind=stage
pipeline.roles.3.inputs.0=b
pipeline.roles.3.outputs.0=outb
pipeline.roles.3.op=add_u8
pipeline.roles.3.delta=2
"""


def _hash_of(spec: Path) -> str:
    """The spec hash a run of ``spec`` records in its journal segments."""
    return spec_hash(load_spec_file(spec))


def test_lanegraph_dry_run_replay(tmp_path: Path) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text(SPEC)
    jdir = tmp_path / "j"
    with JournalWriter(jdir, segment_bytes=65536, slot_bytes=256, spec_hash=_hash_of(spec)) as writer:
        for i in range(5):
            writer.append(bytes([i]) * 3)
    bundle = tmp_path / "bundle"
    res = subprocess.run(
        [
            str(BIN / "byteor"),
            "incident-bundle",
            f"--spec={spec}",
            f"--out={bundle}",
            f"--journal=audit={jdir}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    result = run_replay(
        ReplayRequest(
            bundle=str(bundle),
            journal_lane="audit",
            last_n=4,
            mode="dry_run",
            posture="prod",
            out=str(tmp_path / "audit.json"),
        )
    )
    # Records 1..4; round robin sends 1 and 3 to a (http_post, recorded only), 2 and 4 to b (+2).
    assert sorted(result.outputs) == sorted([b"\x01" * 3, b"\x03" * 3, b"\x04" * 3, b"\x06" * 3])
    audit = read_replay_audit(tmp_path / "audit.json")
    assert [(a.role, a.input_lane, a.output_lane, a.action, a.decision) for a in audit.actions] == [
        ("post-a", "a", "outa", "http_post", "DryRunOnly")
    ] * 2
    assert audit.input.journal_lane == "audit" and audit.input.scanned_records == 5


def test_unknown_lane_is_a_usage_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text(SPEC)
    bundle = tmp_path / "bundle"
    subprocess.run(
        [str(BIN / "byteor"), "incident-bundle", f"--spec={spec}", f"--out={bundle}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    res = subprocess.run(
        [
            str(BIN / "byteor"),
            "replay",
            f"--bundle={bundle}",
            "--journal-lane=zzz",
            "--last-n=1",
            f"--out={tmp_path / 'a.json'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2 and "no such lane in the bundle's spec" in res.stderr
    res = subprocess.run(
        [
            str(BIN / "byteor"),
            "replay",
            f"--bundle={bundle}",
            "--journal-lane=audit",
            "--last-n=1",
            f"--out={tmp_path / 'a.json'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2 and "no journal lane 'audit' in the bundle" in res.stderr
    assert not (tmp_path / "a.json").exists()
