"""Replay audit JSON v1: what a replay selected, under which policy, and every action.

Root: ``audit_v`` (1), ``created_unix_ms``, ``bundle_dir``, ``spec_sha256`` (``sha256:<hex>``, the
spec hash), ``input`` {``journal_lane``, ``journal_path``, ``last_n``, ``scanned_records``,
``selected_bytes``, ``sample_sha256`` (``sha256:<hex>`` of each selected record, in order)},
``policy`` {``env``, ``approval_provided``, ``mode`` (``dry_run`` | ``execute``)}, ``actions``
[{``action``, ``role``, ``input_lane``, ``output_lane``, ``stage``, ``target``, ``decision``}].

One additive field: ``outcome`` {``completed``, ``records_replayed``, ``stopped_by`` (null,
``max_actions``, ``max_bytes``, ``error``), ``message``} so that a replay stopped by a limit is
visibly partial. Readers of the seed format ignore it; this reader accepts its absence.

The audit is immutable: :func:`write_replay_audit` creates the file with ``O_EXCL`` and never
replaces an existing one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .._errors import ArtifactError
from .._json import check_version, read_json_object, require, write_json

__all__ = [
    "ACTION_FIELDS",
    "ReplayAudit",
    "ReplayAuditAction",
    "ReplayAuditInput",
    "ReplayAuditOutcome",
    "ReplayAuditPolicy",
    "read_replay_audit",
    "write_replay_audit",
]

ACTION_FIELDS = ("action", "role", "input_lane", "output_lane", "stage", "target", "decision")
MODES = ("dry_run", "execute")


@dataclass(frozen=True)
class ReplayAuditInput:
    journal_lane: str
    journal_path: str
    last_n: int
    scanned_records: int
    selected_bytes: int
    sample_sha256: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "journal_lane": self.journal_lane,
            "journal_path": self.journal_path,
            "last_n": self.last_n,
            "scanned_records": self.scanned_records,
            "selected_bytes": self.selected_bytes,
            "sample_sha256": list(self.sample_sha256),
        }


@dataclass(frozen=True)
class ReplayAuditPolicy:
    env: str
    approval_provided: bool
    mode: str

    def to_json(self) -> dict[str, Any]:
        return {"env": self.env, "approval_provided": self.approval_provided, "mode": self.mode}


@dataclass(frozen=True)
class ReplayAuditAction:
    """One action a replayed record reached: performed, suppressed or refused, per ``decision``."""

    action: str
    role: str
    input_lane: str
    output_lane: str
    stage: str
    target: str
    decision: str

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ACTION_FIELDS}


@dataclass(frozen=True)
class ReplayAuditOutcome:
    completed: bool
    records_replayed: int
    stopped_by: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "records_replayed": self.records_replayed,
            "stopped_by": self.stopped_by,
            "message": self.message,
        }


@dataclass(frozen=True)
class ReplayAudit:
    created_unix_ms: int
    bundle_dir: str
    spec_sha256: str
    input: ReplayAuditInput
    policy: ReplayAuditPolicy
    actions: tuple[ReplayAuditAction, ...]
    outcome: ReplayAuditOutcome | None = None
    audit_v: int = field(default=1)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "audit_v": self.audit_v,
            "created_unix_ms": self.created_unix_ms,
            "bundle_dir": self.bundle_dir,
            "spec_sha256": self.spec_sha256,
            "input": self.input.to_json(),
            "policy": self.policy.to_json(),
            "actions": [a.to_json() for a in self.actions],
        }
        if self.outcome is not None:
            out["outcome"] = self.outcome.to_json()
        return out


def write_replay_audit(path: str | os.PathLike[str], audit: ReplayAudit) -> None:
    """Create the audit file exclusively; an existing file is an ArtifactError (never overwritten)."""
    write_json(path, audit.to_json(), exclusive=True)


def _u64(obj: dict[str, Any], key: str, path: str, where: str) -> int:
    value = require(obj, key, int, path=path)
    if value < 0:
        raise ArtifactError(f"{path}: field `{where}{key}` must be >= 0, found {value}")
    return int(value)


def read_replay_audit(path: str | os.PathLike[str]) -> ReplayAudit:
    """Read a replay audit; a newer ``audit_v`` major or a malformed field is an ArtifactError."""
    p = os.fspath(path)
    obj = read_json_object(p, artifact="replay_audit")
    version = check_version(obj, artifact="replay_audit", field="audit_v", path=p, required=True)
    inp = require(obj, "input", dict, path=p)
    samples = require(inp, "sample_sha256", list, path=p)
    if not all(isinstance(s, str) for s in samples):
        raise ArtifactError(f"{p}: field `input.sample_sha256` must be a list of strings")
    audit_input = ReplayAuditInput(
        journal_lane=require(inp, "journal_lane", str, path=p),
        journal_path=require(inp, "journal_path", str, path=p),
        last_n=_u64(inp, "last_n", p, "input."),
        scanned_records=_u64(inp, "scanned_records", p, "input."),
        selected_bytes=_u64(inp, "selected_bytes", p, "input."),
        sample_sha256=tuple(samples),
    )
    pol = require(obj, "policy", dict, path=p)
    mode = require(pol, "mode", str, path=p)
    if mode not in MODES:
        raise ArtifactError(f"{p}: field `policy.mode` must be dry_run or execute, found {mode!r}")
    policy = ReplayAuditPolicy(
        require(pol, "env", str, path=p), require(pol, "approval_provided", bool, path=p), mode
    )
    actions: list[ReplayAuditAction] = []
    for i, raw in enumerate(require(obj, "actions", list, path=p)):
        if not isinstance(raw, dict):
            raise ArtifactError(f"{p}: field `actions.{i}` must be an object")
        values = [require(raw, name, str, path=f"{p} (actions.{i})") for name in ACTION_FIELDS]
        actions.append(ReplayAuditAction(*values))
    outcome = None
    if isinstance(obj.get("outcome"), dict):
        raw_out = obj["outcome"]
        outcome = ReplayAuditOutcome(
            completed=require(raw_out, "completed", bool, path=p),
            records_replayed=_u64(raw_out, "records_replayed", p, "outcome."),
            stopped_by=require(raw_out, "stopped_by", str, path=p, nullable=True),
            message=require(raw_out, "message", str, path=p, nullable=True),
        )
    return ReplayAudit(
        created_unix_ms=_u64(obj, "created_unix_ms", p, ""),
        bundle_dir=require(obj, "bundle_dir", str, path=p),
        spec_sha256=require(obj, "spec_sha256", str, path=p),
        input=audit_input,
        policy=policy,
        actions=tuple(actions),
        outcome=outcome,
        audit_v=version,
    )
