"""The decision table, the operator policy file, replay policy and replay limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from byteor import PolicyRefused, UsageError, load_spec_file, spec_hash
from byteor.policy import DEFAULT_TABLE, ReplayBudget, ReplayLimits, decide, load_policy_file, replay_policy
from byteor.policy.gate import evaluate_run, gate_run
from byteor.policy.replay import DEFAULT_MAX_ACTIONS, DEFAULT_MAX_INPUT_BYTES
from policy_support import new_signer, write_key_set, write_spec

URL = "http_post:http://127.0.0.1:9/h"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BYTEOR_HTTP_POST_ALLOWLIST", "BYTEOR_EXEC_ALLOWLIST", "BYTEOR_POLICY_FILE",
                 "BYTEOR_API_BASE_URL", "BYTEOR_AGENT_ID", "BYTEOR_AGENT_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("posture", "dry_run", "replay", "approved", "expected"), [
    ("dev", False, None, False, "Allow"),
    ("staging", False, None, False, "RequireApproval"),
    ("prod", False, None, False, "RequireApproval"),
    ("staging", False, None, True, "Allow"),
    ("prod", False, None, True, "Allow"),
    ("dev", True, None, False, "DryRunOnly"),
    ("prod", True, None, False, "DryRunOnly"),
    ("prod", False, "dry_run", False, "DryRunOnly"),
    ("dev", False, "dry_run", False, "DryRunOnly"),
    ("dev", False, "execute", False, "RequireApproval"),
    ("prod", False, "execute", False, "RequireApproval"),
    ("prod", False, "execute", True, "Allow"),
    ("prod", True, "execute", True, "DryRunOnly"),
])
def test_default_table(posture: str, dry_run: bool, replay: str | None, approved: bool,
                       expected: str) -> None:
    for family in ("http_post", "exec"):
        decision, reason = decide(DEFAULT_TABLE.rules(posture), family, dry_run=dry_run, replay_mode=replay,
                                  approved=approved)
        assert decision == expected, reason
        assert reason


def test_policy_file_overrides_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pf = tmp_path / "policy.json"
    pf.write_text(json.dumps({"policy_version": 1, "postures": {
        "staging": {"side_effects": "allow"},
        "prod": {"families": {"exec": "deny"}, "replay": "dry_run_only"},
        "dev": {"replay": "disabled", "side_effects": "deny"},
    }}))
    table = load_policy_file(str(pf))
    assert table.source == str(pf)

    def live(posture: str, family: str, approved: bool, replay: str | None = None) -> str:
        return decide(table.rules(posture), family, dry_run=False, replay_mode=replay, approved=approved)[0]

    assert live("staging", "http_post", False) == "Allow"
    assert live("prod", "exec", True) == "Deny"
    assert live("prod", "http_post", True) == "Allow"
    assert live("prod", "http_post", True, "execute") == "DryRunOnly"
    assert live("dev", "http_post", False, "dry_run") == "Deny"
    assert replay_policy("prod", str(pf)) == "dry_run_only" and replay_policy("prod") == "allowed"
    # through the gate, named by BYTEOR_POLICY_FILE
    spec_path = write_spec(tmp_path, URL)
    spec = load_spec_file(spec_path)
    monkeypatch.setenv("BYTEOR_POLICY_FILE", str(pf))
    gate = gate_run(spec, spec_path=str(spec_path), spec_hash=spec_hash(spec), posture="staging",
                    dry_run=False, approval=None, key_set=None)
    assert gate.decisions[0].decision == "Allow" and gate.table.source == str(pf)
    with pytest.raises(PolicyRefused, match="policy denies http_post in posture dev"):
        gate_run(spec, spec_path=str(spec_path), spec_hash=spec_hash(spec), posture="dev",
                 dry_run=False, approval=None, key_set=None)


@pytest.mark.parametrize(("doc", "needle"), [
    ({"policy_version": 2}, "policy_version"),
    ({"policy_version": 1, "postures": {"qa": {}}}, "postures.qa"),
    ({"policy_version": 1, "postures": {"prod": {"side_effects": "maybe"}}}, "postures.prod.side_effects"),
    ({"policy_version": 1, "postures": {"prod": {"families": {"ftp": "deny"}}}}, "unknown family `ftp`"),
    ({"policy_version": 1, "postures": {"prod": {"colour": "red"}}}, "unknown field `colour`"),
    ({"policy_version": 1, "extra": 1}, "unknown field `extra`"),
    ([], "JSON object"),
])
def test_bad_policy_file_names_the_field(tmp_path: Path, doc: object, needle: str) -> None:
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=needle) as info:
        load_policy_file(str(pf))
    assert str(pf) in str(info.value) and info.value.exit_code == 2


def test_replay_modes_through_the_gate(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, URL)
    spec = load_spec_file(spec_path)
    h = spec_hash(spec)
    signer = new_signer()
    keys = write_key_set(tmp_path / "keys.json", signer)

    def run(mode: str, approval: str | None) -> str:
        gate = evaluate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                            approval=approval, key_set=str(keys), replay_mode=mode)
        return gate.decisions[0].decision

    assert run("dry_run", None) == "DryRunOnly"
    assert run("execute", None) == "RequireApproval"
    assert run("execute", signer.issue(h, "prod", ["http_post", "replay_execute"])) == "Allow"
    plain = signer.issue(h, "prod", ["http_post"])
    assert run("execute", plain) == "RequireApproval"
    gate = evaluate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                        approval=plain, key_set=str(keys), replay_mode="execute")
    assert gate.approval_error is not None and gate.approval_error.check == "capabilities"
    assert "replay_execute" in gate.decisions[0].reason
    with pytest.raises(UsageError):
        evaluate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                     approval=None, key_set=None, replay_mode="live")


def test_no_side_effects_means_nothing_to_decide(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path)
    spec = load_spec_file(spec_path)
    gate = gate_run(spec, spec_path=str(spec_path), spec_hash=spec_hash(spec), posture="prod",
                    dry_run=False, approval=None, key_set=None)
    assert gate.decisions == [] and gate.context.decisions == {}


def test_replay_limits_only_narrow() -> None:
    limits = ReplayLimits()
    assert (limits.max_actions, limits.max_input_bytes) == (DEFAULT_MAX_ACTIONS, DEFAULT_MAX_INPUT_BYTES)
    assert (DEFAULT_MAX_ACTIONS, DEFAULT_MAX_INPUT_BYTES) == (10_000, 128 * 1024 * 1024)
    small = limits.narrowed(max_actions=2, max_input_bytes=10)
    assert (small.max_actions, small.max_input_bytes) == (2, 10)
    with pytest.raises(UsageError):
        limits.narrowed(max_actions=10_001)
    with pytest.raises(UsageError):
        small.narrowed(max_input_bytes=11)
    budget = ReplayBudget(small)
    budget.charge(actions=1, input_bytes=6)
    budget.charge(actions=1, input_bytes=4)
    with pytest.raises(PolicyRefused, match="more than 2 actions"):
        budget.charge(actions=1)
    with pytest.raises(PolicyRefused, match="exceed 10 bytes"):
        ReplayBudget(small).charge(input_bytes=11)
    with pytest.raises(PolicyRefused):
        small.check_input(11)
    small.check_input(10)
