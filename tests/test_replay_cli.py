"""``replay`` end to end: real journal, real bundle, real local HTTP server, real approvals."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from byteor.artifacts import read_replay_audit
from byteor.lanes.journal import JournalWriter
from byteor.policy.approvals import issue_credential
from byteor.spec.kv import decode_kv, spec_hash
from replay_support import (
    RECORDS,
    TEE,
    RecordingServer,
    Run,
    bumped,
    journal_spec_hash,
    received,
    replay_spec_text,
    sha,
    signing_keys,
)


def test_dry_run_performs_nothing_and_records_every_action(
    bundle: Path, server: RecordingServer, byteor: Run, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.json"
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=3",
        "--mode=dry_run",
        "--env=staging",
        f"--out={audit_path}",
    )
    assert res.returncode == 0, res.stderr
    assert received(server) == []
    assert not (tmp_path / "exec-sink.txt").exists()
    audit = read_replay_audit(audit_path)
    assert audit.input.scanned_records == len(RECORDS) and audit.input.last_n == 3
    assert audit.input.sample_sha256 == tuple(sha(r) for r in RECORDS[-3:])
    assert audit.input.selected_bytes == sum(len(r) for r in RECORDS[-3:])
    assert (
        audit.policy.mode == "dry_run"
        and audit.policy.env == "staging"
        and not audit.policy.approval_provided
    )
    assert audit.spec_sha256 == spec_hash(decode_kv((bundle / "spec.kv").read_bytes()))
    assert [(a.role, a.action, a.decision) for a in audit.actions] == [
        ("notify", "http_post", "DryRunOnly"),
        ("archive", "exec", "DryRunOnly"),
    ] * 3
    first = audit.actions[0]
    assert first.input_lane == "ingress" and first.output_lane == "egress"
    assert first.stage.startswith("http_post:http://127.0.0.1:") and first.target.endswith("/hook")
    assert audit.actions[1].target == TEE
    assert audit.outcome is not None and audit.outcome.completed and audit.outcome.records_replayed == 3


def test_dry_run_records_deny_when_exec_is_not_allowlisted(bundle: Path, byteor: Run, tmp_path: Path) -> None:
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=1",
        f"--out={tmp_path / 'a'}",
        "--json",
        env={"BYTEOR_EXEC_ALLOWLIST": ""},
    )
    assert res.returncode == 0, res.stderr
    decisions = [a["decision"] for a in json.loads(res.stdout)["audit"]["actions"]]
    assert decisions == ["DryRunOnly", "Deny"]


def test_execute_without_approval_is_refused(
    bundle: Path, server: RecordingServer, byteor: Run, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.json"
    for env in ("dev", "staging"):
        res = byteor(
            "replay",
            f"--bundle={bundle}",
            "--journal-lane=events",
            "--last-n=2",
            "--mode=execute",
            f"--env={env}",
            f"--out={audit_path}",
        )
        assert res.returncode == 4, res.stderr
        assert "RequireApproval" in res.stderr and "replay_execute" in res.stderr
    assert received(server) == [] and not audit_path.exists()


def test_execute_with_approval_delivers_selected_records_once(
    bundle: Path, server: RecordingServer, byteor: Run, tmp_path: Path
) -> None:
    key, key_set = signing_keys(tmp_path)
    shash = spec_hash(decode_kv((bundle / "spec.kv").read_bytes()))
    cred = issue_credential(
        key,
        kid="ops-1",
        spec_hash=shash,
        posture="staging",
        capabilities=["http_post", "exec", "replay_execute"],
        ttl=timedelta(hours=1),
    )
    cred_file = tmp_path / "approval.cred"
    cred_file.write_text(cred + "\n")
    audit_path = tmp_path / "audit.json"
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=3",
        "--mode=execute",
        "--env=staging",
        f"--approval={cred_file}",
        f"--approval-key-set={key_set}",
        f"--out={audit_path}",
    )
    assert res.returncode == 0, res.stderr
    expected = [bumped(r) for r in RECORDS[-3:]]
    assert received(server) == [(b, sha(b)) for b in expected]
    assert (tmp_path / "exec-sink.txt").read_bytes() == b"".join(expected)
    audit = read_replay_audit(audit_path)
    assert audit.policy.approval_provided and audit.policy.mode == "execute"
    assert {a.decision for a in audit.actions} == {"Allow"} and len(audit.actions) == 6
    # The audit is immutable: the same --out is refused and nothing is sent again.
    again = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=3",
        "--mode=execute",
        "--env=staging",
        f"--approval={cred_file}",
        f"--approval-key-set={key_set}",
        f"--out={audit_path}",
    )
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert len(received(server)) == 3
    # An approval without replay_execute is not enough.
    weak = issue_credential(
        key,
        kid="ops-1",
        spec_hash=shash,
        posture="staging",
        capabilities=["http_post", "exec"],
        ttl=timedelta(hours=1),
    )
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=3",
        "--mode=execute",
        "--env=staging",
        f"--approval={weak}",
        f"--approval-key-set={key_set}",
        f"--out={tmp_path / 'weak.json'}",
    )
    assert res.returncode == 4 and "capabilities" in res.stderr
    assert len(received(server)) == 3


def test_limits_stop_with_a_clear_message_and_a_complete_audit(
    bundle: Path, server: RecordingServer, byteor: Run, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.json"
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=5",
        "--max-actions=3",
        f"--out={audit_path}",
    )
    assert res.returncode == 4
    assert "replay stopped after 1 of 5 record(s)" in res.stderr and str(audit_path) in res.stderr
    assert "Traceback" not in res.stderr
    audit = read_replay_audit(audit_path)
    assert len(audit.actions) == 3 and audit.outcome is not None
    assert audit.outcome.stopped_by == "max_actions" and audit.outcome.records_replayed == 1
    assert not audit.outcome.completed and len(audit.input.sample_sha256) == 5

    by_bytes = tmp_path / "bytes.json"
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=5",
        "--max-bytes=20",
        f"--out={by_bytes}",
    )
    assert res.returncode == 4 and "replay stopped after 2 of 5" in res.stderr
    audit = read_replay_audit(by_bytes)
    assert audit.outcome is not None and audit.outcome.stopped_by == "max_bytes" and len(audit.actions) == 4
    assert received(server) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-actions=10001"], "between 0 and 10000"),
        (["--last-n=0"], "--last-n must be >= 1"),
        (["--journal-lane=nope"], "no journal lane 'nope'"),
        (["--mode=live"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(
    bundle: Path, byteor: Run, tmp_path: Path, args: list[str], message: str
) -> None:
    base = {"--journal-lane": "--journal-lane=events", "--last-n": "--last-n=2"}
    for a in args:
        base[a.split("=", 1)[0]] = a
    res = byteor("replay", f"--bundle={bundle}", *base.values(), f"--out={tmp_path / 'x.json'}")
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    missing = byteor(
        "replay",
        f"--bundle={tmp_path / 'none'}",
        "--journal-lane=events",
        "--last-n=1",
        f"--out={tmp_path / 'y.json'}",
    )
    assert missing.returncode == 2 and "bundle does not exist" in missing.stderr


def test_replay_from_a_tar_bundle(tmp_path: Path, server: RecordingServer, byteor: Run) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text(replay_spec_text(server.server_address[1], tmp_path / "sink"))
    jdir = tmp_path / "j"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=journal_spec_hash(spec)) as writer:
        writer.append(b"only")
    assert (
        byteor(
            "incident-bundle",
            f"--spec={spec}",
            f"--out={tmp_path / 'case'}",
            "--tar",
            f"--journal=events={jdir}",
        ).returncode
        == 0
    )
    res = byteor(
        "replay",
        f"--bundle={tmp_path / 'case.tar.gz'}",
        "--journal-lane=events",
        "--last-n=9",
        f"--out={tmp_path / 'a.json'}",
    )
    assert res.returncode == 0, res.stderr
    audit = read_replay_audit(tmp_path / "a.json")
    assert audit.input.scanned_records == 1 and audit.input.sample_sha256 == (sha(b"only"),)


STAGE_MODULE = """
def upper(slot, length):
    slot[:length] = bytes(slot[:length]).upper()
    return length
"""


def test_execute_runs_python_stages_through_the_registry(
    tmp_path: Path, server: RecordingServer, byteor: Run
) -> None:
    (tmp_path / "h7_replay_stage.py").write_text(STAGE_MODULE)
    spec = tmp_path / "spec.kv"
    spec.write_text(
        "pipeline.name=py\npipeline.target=SingleRing\n"
        "pipeline.stages.0.id=up\npipeline.stages.0.op=resolver\npipeline.stages.0.resolver_key=py:h7_replay_stage:upper\n"
        "pipeline.stages.1.id=post\npipeline.stages.1.op=resolver\n"
        f"pipeline.stages.1.resolver_key=http_post:http://127.0.0.1:{server.server_address[1]}/py\n"
        "pipeline.stages.1.depends_on.0=0\n"
    )
    jdir = tmp_path / "j"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=journal_spec_hash(spec)) as writer:
        for rec in (b"one", b"two"):
            writer.append(rec)
    env = {"PYTHONPATH": str(tmp_path)}
    assert (
        byteor(
            "incident-bundle",
            f"--spec={spec}",
            f"--out={tmp_path / 'b'}",
            f"--journal=events={jdir}",
            env=env,
        ).returncode
        == 0
    )
    key, key_set = signing_keys(tmp_path)
    shash = spec_hash(decode_kv((tmp_path / "b" / "spec.kv").read_bytes()))
    cred = issue_credential(
        key,
        kid="ops-1",
        spec_hash=shash,
        posture="dev",
        capabilities=["http_post", "replay_execute"],
        ttl=timedelta(hours=1),
    )
    res = byteor(
        "replay",
        f"--bundle={tmp_path / 'b'}",
        "--journal-lane=events",
        "--last-n=5",
        "--mode=execute",
        f"--approval={cred}",
        f"--approval-key-set={key_set}",
        f"--out={tmp_path / 'a.json'}",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert received(server) == [(b"ONE", sha(b"ONE")), (b"TWO", sha(b"TWO"))]


def test_invalid_bundle_spec_is_exit_3(tmp_path: Path, byteor: Run) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text(
        "pipeline.name=x\npipeline.target=SingleRing\npipeline.constraints.producer=mpmc\n"
        "pipeline.stages.0.id=a\n"
    )
    jdir = tmp_path / "j"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=journal_spec_hash(spec)) as writer:
        writer.append(b"x")
    assert (
        byteor(
            "incident-bundle", f"--spec={spec}", f"--out={tmp_path / 'b'}", f"--journal=events={jdir}"
        ).returncode
        == 0
    )
    res = byteor(
        "replay",
        f"--bundle={tmp_path / 'b'}",
        "--journal-lane=events",
        "--last-n=1",
        f"--out={tmp_path / 'a.json'}",
    )
    assert res.returncode == 3 and "pipeline.constraints.producer" in res.stderr
    assert not (tmp_path / "a.json").exists()
