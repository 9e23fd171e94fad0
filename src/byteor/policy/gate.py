"""The run gate: every side-effecting stage's decision, computed once before anything runs.

:func:`gate_run` is what ``run`` (and replay) call at startup. It finds the action stages
(SingleRing stages or LaneGraph stage roles), applies the allowlists, verifies the approval only
when some stage needs one (refreshing the signing keys first when the control plane is
configured), decides each stage with :func:`~byteor.policy.decisions.decide`, and either returns a
:class:`RunGate` whose ``context`` the resolvers use, or raises :class:`~byteor.PolicyRefused`
(exit 4) naming every refused stage with its decision and reason, one line each.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._errors import ApprovalError, PolicyRefused, UsageError
from .._stage import APPROVAL_COVERS, APPROVAL_EXPIRES_AT, APPROVAL_ID, StageContext
from ..spec.model import PipelineSpecV1
from .admission import admission
from .approvals import VerifiedApproval, read_credential, required_capabilities, side_effect_stages
from .approvals import verify_credential as _verify
from .decisions import ALLOW, DENY, REFUSING, REPLAY_MODES, REQUIRE_APPROVAL, PolicyTable, decide, policy_table
from .keys import load_runtime_keys

__all__ = ["RunGate", "StageDecision", "evaluate_run", "gate_run"]


@dataclass(frozen=True)
class StageDecision:
    """One side-effecting stage and what the policy decided for it."""

    index: int
    name: str
    key: str
    family: str
    decision: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "stage": self.name, "key": self.key, "family": self.family,
                "decision": self.decision, "reason": self.reason}


@dataclass(frozen=True)
class RunGate:
    """The gate's outcome: per-stage decisions, the resolver context, and the approval state."""

    decisions: list[StageDecision]
    context: StageContext
    posture: str
    table: PolicyTable
    approval: VerifiedApproval | None = None
    approval_error: ApprovalError | None = None
    approval_origin: str | None = None
    replay_mode: str | None = None

    @property
    def refused(self) -> list[StageDecision]:
        return [d for d in self.decisions if d.decision in REFUSING]

    def refusal_message(self) -> str:
        lines = [f"refused by policy (posture {self.posture}): {len(self.refused)} stage(s) may not run"]
        lines += [f"  stage {d.index} {d.name!r} ({d.key}): {d.decision}: {d.reason}" for d in self.refused]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "posture": self.posture,
            "dry_run": self.context.dry_run,
            "replay_mode": self.replay_mode,
            "spec_hash": self.context.spec_hash,
            "policy_source": self.table.source,
            "approval": (self.approval.summary() if self.approval else None),
            "approval_error": ({"check": self.approval_error.check, "message": str(self.approval_error)}
                               if self.approval_error else None),
            "decisions": [d.to_json() for d in self.decisions],
        }


def evaluate_run(spec: PipelineSpecV1, *, spec_path: str, spec_hash: str, posture: str, dry_run: bool,
                 approval: str | None, key_set: str | None, replay_mode: str | None = None,
                 policy_file: str | None = None, recorder: Callable[[dict[str, Any]], None] | None = None,
                 dead_letter_dir: str | None = None, now: datetime | None = None) -> RunGate:
    """Compute every decision without refusing (``policy`` and ``policy-audit`` show the result)."""
    if replay_mode is not None and replay_mode not in REPLAY_MODES:
        raise UsageError(f"replay mode must be one of {'|'.join(REPLAY_MODES)}, got {replay_mode!r}")
    table = policy_table(policy_file)
    rules = table.rules(posture)
    spec_dir = os.path.dirname(os.path.abspath(spec_path))
    stages = side_effect_stages(spec)

    denied: dict[int, str] = {}
    for index, _name, key, _fam in stages:
        reason = admission(key)
        if reason is not None:
            denied[index] = reason

    # First pass without an approval: does any stage need one?
    provisional = {index: decide(rules, fam, dry_run=dry_run, replay_mode=replay_mode, approved=False)[0]
                   for index, _n, _k, fam in stages if index not in denied}
    verified: VerifiedApproval | None = None
    problem: ApprovalError | None = None
    origin: str | None = None
    problem_text: str | None = None
    if REQUIRE_APPROVAL in provisional.values():
        found = read_credential(approval, spec_dir)
        if found is None:
            problem_text = "no approval credential (pass --approval, or put approval.cred next to the spec)"
        else:
            credential, origin = found
            keys = load_runtime_keys(spec_dir, key_set)
            required = required_capabilities(spec, replay_execute=replay_mode == "execute")
            try:
                verified = _verify(credential, keys=keys, spec_hash=spec_hash, posture=posture,
                                   required=required, now=now, max_lifetime=rules.approval_max_lifetime)
            except ApprovalError as exc:
                problem = exc
                problem_text = str(exc)

    decisions: list[StageDecision] = []
    by_key: dict[str, str] = {}
    covered: set[str] = set()  # keys allowed only because an approval verified
    for index, name, key, fam in stages:
        if index in denied:
            decision, reason = DENY, denied[index]
        else:
            decision, reason = decide(rules, fam, dry_run=dry_run, replay_mode=replay_mode,
                                      approved=verified is not None, approval_problem=problem_text)
            if verified is not None and decision != DENY and "approval" in reason:
                reason += f" (approval {verified.payload.approval_id}, key {verified.payload.kid})"
            if verified is not None and decision == ALLOW and provisional.get(index) == REQUIRE_APPROVAL:
                covered.add(key)
        decisions.append(StageDecision(index, name, key, fam, decision, reason))
        # The same key twice gets the stricter of its decisions.
        previous = by_key.get(key)
        if previous is None or _rank(decision) > _rank(previous):
            by_key[key] = decision
    extra: dict[str, Any] = {}
    if verified is not None and covered:
        extra = {APPROVAL_EXPIRES_AT: verified.payload.expires_at, APPROVAL_ID: verified.payload.approval_id,
                 APPROVAL_COVERS: "\n".join(sorted(covered))}
    context = StageContext(posture=posture, dry_run=dry_run, spec_hash=spec_hash, spec_dir=spec_dir,
                           decisions=by_key, recorder=recorder,
                           dead_letter_dir=dead_letter_dir or os.path.join(spec_dir, "dead-letter"), extra=extra)
    return RunGate(decisions, context, posture, table, verified, problem, origin, replay_mode)


_RANKS = {"Allow": 0, "DryRunOnly": 1, "RequireApproval": 2, "Deny": 3}


def _rank(decision: str) -> int:
    return _RANKS[decision]


def gate_run(spec: PipelineSpecV1, *, spec_path: str, spec_hash: str, posture: str, dry_run: bool,
             approval: str | None, key_set: str | None, replay_mode: str | None = None,
             policy_file: str | None = None, recorder: Callable[[dict[str, Any]], None] | None = None,
             dead_letter_dir: str | None = None, now: datetime | None = None) -> RunGate:
    """Decide every side-effecting stage; raise :class:`PolicyRefused` (exit 4) listing each stage
    whose decision is ``Deny`` or ``RequireApproval`` with its reason, else return the gate.

    A malformed action key is a ``Deny`` like an allowlist refusal. Raises :class:`UsageError`
    (exit 2) for a malformed policy file, key set or allowlist variable.
    """
    gate = evaluate_run(spec, spec_path=spec_path, spec_hash=spec_hash, posture=posture, dry_run=dry_run,
                        approval=approval, key_set=key_set, replay_mode=replay_mode,
                        policy_file=policy_file, recorder=recorder, dead_letter_dir=dead_letter_dir,
                        now=now)
    if gate.refused:
        raise PolicyRefused(gate.refusal_message())
    return gate
