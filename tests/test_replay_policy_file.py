"""``replay --mode=execute`` needs the policy's permission as well as the approval: an operator policy
file that makes replay ``dry_run_only`` (the run becomes a dry run, audited as such) or ``disabled``
(refused, exit 4) wins over a full approval, and the real local server receives nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from byteor.artifacts import read_replay_audit
from byteor.policy.approvals import issue_credential
from byteor.spec.kv import decode_kv, spec_hash
from replay_support import RecordingServer, Run, received, signing_keys


def _approved_execute(bundle: Path, byteor: Run, tmp_path: Path, policy: Path, out: Path) -> tuple[int, str]:
    key, key_set = signing_keys(tmp_path)
    cred = issue_credential(key, kid="ops-1", spec_hash=spec_hash(decode_kv((bundle / "spec.kv").read_bytes())),
                            posture="staging", capabilities=["http_post", "exec", "replay_execute"],
                            ttl=timedelta(hours=1))
    res = byteor("replay", f"--bundle={bundle}", "--journal-lane=events", "--last-n=2", "--mode=execute",
                 "--env=staging", f"--approval={cred}", f"--approval-key-set={key_set}",
                 f"--policy-file={policy}", f"--out={out}")
    return res.returncode, res.stderr


def test_policy_dry_run_only_wins_over_an_approval(bundle: Path, server: RecordingServer, byteor: Run,
                                                   tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy_version": 1, "postures": {"staging": {"replay": "dry_run_only"}}}))
    out = tmp_path / "audit.json"
    code, err = _approved_execute(bundle, byteor, tmp_path, policy, out)
    assert received(server) == [] and not (tmp_path / "exec-sink.txt").exists()
    assert code == 0 and "Traceback" not in err, err
    assert "made 4 action(s) DryRunOnly: they were recorded, not performed" in err, err
    # executed as a dry run: every would-be action recorded as DryRunOnly
    audit = read_replay_audit(out)
    assert audit.policy.mode == "execute" and audit.policy.approval_provided
    assert {a.decision for a in audit.actions} == {"DryRunOnly"} and len(audit.actions) == 4


def test_policy_disabled_refuses_replay(bundle: Path, server: RecordingServer, byteor: Run, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy_version": 1, "postures": {"staging": {"replay": "disabled"}}}))
    code, err = _approved_execute(bundle, byteor, tmp_path, policy, tmp_path / "audit.json")
    assert code == 4 and "replay is disabled in posture staging" in err, err
    assert received(server) == [] and not (tmp_path / "exec-sink.txt").exists()
