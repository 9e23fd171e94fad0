"""Offline replay of journal records from an incident bundle, with an immutable audit.

The engine runs each selected record through the bundle's spec in one process, with the reference
semantics of ``run --sp`` (as docs/runtime.md defines it: stages one after another in index order; for a LaneGraph the
record enters at the selected journal lane and flows through every reader downstream, roles in
index order, depth first). Nothing is appended to any journal and no shared memory is touched.

Side effects: every action stage (``http_post``, ``exec``) a record reaches is one audit entry with
the policy decision. In ``dry_run`` mode no action function is ever called, so nothing leaves the
process whatever the decision; in ``execute`` mode the gate must have allowed every action stage
(a verified approval carrying ``replay_execute`` and the action families, and the posture's replay
policy), and only ``Allow`` actions are performed, once each.

Limits (:class:`~byteor.policy.replay.ReplayLimits`, lowered by ``--max-actions`` /
``--max-bytes``): before each record its bytes are charged, before each action one action; the
first charge over a limit stops the replay. The audit is written in every case once the replay
started (also when it stopped early or an action failed), with ``outcome`` saying how far it got.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import (
    ActionFailed,
    ArtifactError,
    PipelineFailed,
    PolicyRefused,
    UnsupportedSpecError,
    UsageError,
)
from .._stage import ResolvedStage
from ..artifacts.bundle import IncidentBundle, extract_bundle_tar, read_incident_bundle
from ..artifacts.replay_audit import (
    ReplayAudit,
    ReplayAuditAction,
    ReplayAuditInput,
    ReplayAuditOutcome,
    ReplayAuditPolicy,
    write_replay_audit,
)
from ..edges.files import CollectSink
from ..lanes.journal import JournalReader
from ..policy.replay import ReplayBudget, ReplayLimits
from ..runtime.session import RunOptions, RunSession, StageSite
from ..spec.kv import decode_kv, spec_hash
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1
from ..spec.validate import check_v1

__all__ = ["MODES", "ReplayRequest", "ReplayResult", "ReplayStopped", "run_replay", "select_records"]

MODES = ("dry_run", "execute")
ACTION_FAMILIES = ("http_post", "exec")


class ReplayStopped(PolicyRefused):
    """A replay limit stopped the replay; the audit (``audit_path``) says what was done."""

    def __init__(self, message: str, audit_path: str) -> None:
        self.audit_path = audit_path
        super().__init__(f"{message}; the audit of what was done is {audit_path}")


@dataclass(frozen=True)
class ReplayRequest:
    bundle: str
    journal_lane: str
    last_n: int
    mode: str
    posture: str
    out: str
    approval: str | None = None
    key_set: str | None = None
    max_actions: int | None = None
    max_bytes: int | None = None
    policy_file: str | None = None


@dataclass(frozen=True)
class ReplayResult:
    audit: ReplayAudit
    audit_path: Path
    outputs: tuple[bytes, ...]
    decisions: tuple[dict[str, Any], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Selection:
    """The last ``last_n`` committed records of a journal: where they start and how many the lane
    held. Records are streamed from disk (:meth:`records`), never all held in memory."""

    journal_path: str
    scanned_records: int
    start: int
    count: int

    def records(self) -> Iterator[bytes]:
        reader = _reader(self.journal_path)
        for i, record in enumerate(reader.records(self.start)):
            if i >= self.count:
                return
            yield bytes(record)


def _reader(journal_dir: str) -> JournalReader:
    return JournalReader(journal_dir)


def select_records(journal_dir: str | os.PathLike[str], last_n: int) -> Selection:
    """Select the last ``last_n`` committed records of a journal directory (fewer when it holds fewer)."""
    reader = _reader(os.fspath(journal_dir))
    oldest, end = reader.positions()
    start = max(oldest, end - last_n)
    return Selection(os.fspath(journal_dir), end - oldest, start, end - start)


# --------------------------------------------------------------------------------------------------
# Auditing the action stages
# --------------------------------------------------------------------------------------------------


class _Stop(PolicyRefused):
    """A replay limit was reached (a ByteorError, so executors pass it through unchanged)."""

    def __init__(self, by: str, message: str) -> None:
        self.by = by
        self.message = message
        super().__init__(message)


def _target(key: str, family: str) -> str:
    rest = key.split(":", 1)[1]
    return rest.split("|", 1)[0] if family == "exec" else rest


class _Auditor:
    """Wraps every action stage: charge one action to the budget, add the audit entry, then call
    the resolved function (which records a dry run, or performs an allowed action)."""

    def __init__(self, budget: ReplayBudget) -> None:
        self.budget = budget
        self.actions: list[ReplayAuditAction] = []

    def wrap(self, site: StageSite, stage: ResolvedStage) -> ResolvedStage:
        family = stage.family
        if family not in ACTION_FAMILIES:
            if stage.side_effect:
                raise UnsupportedSpecError(f"stage {site.name!r}: replay does not know the side-effect "
                                           f"family of {stage.key!r}")
            return stage
        assert family is not None
        entry = ReplayAuditAction(family, site.name, site.input_lane, site.output_lane, stage.key,
                                  _target(stage.key, family), site.decision or "Deny")
        fn = stage.fn
        budget = self.budget
        actions = self.actions

        def audited(slot: memoryview, length: int) -> int:
            try:
                budget.charge(actions=1)
            except PolicyRefused as exc:
                raise _Stop("max_actions", str(exc)) from None
            actions.append(entry)
            result: int = fn(slot, length)
            return result

        return dataclasses.replace(stage, fn=audited)


# --------------------------------------------------------------------------------------------------
# The replay
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_bundle(path: str) -> Iterator[IncidentBundle]:
    if os.path.isfile(path) and (path.endswith((".tar.gz", ".tgz", ".tar"))):
        with tempfile.TemporaryDirectory(prefix="byteor-replay-") as tmp:
            yield read_incident_bundle(extract_bundle_tar(path, tmp))
    elif os.path.isdir(path):
        yield read_incident_bundle(path)
    else:
        raise UsageError(f"{path}: bundle does not exist (expected an incident bundle directory or .tar.gz)")


def _check_request(req: ReplayRequest) -> ReplayLimits:
    if req.mode not in MODES:
        raise UsageError(f"--mode must be dry_run or execute, got {req.mode!r}")
    if req.last_n < 1:
        raise UsageError(f"--last-n must be >= 1, got {req.last_n}")
    if os.path.lexists(req.out):
        raise UsageError(f"{req.out}: already exists; a replay audit is never overwritten")
    out_dir = os.path.dirname(os.path.abspath(req.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"{req.out}: directory {out_dir} does not exist")
    return ReplayLimits().narrowed(max_actions=req.max_actions, max_input_bytes=req.max_bytes)


def _spec_of(bundle: IncidentBundle) -> tuple[PipelineSpecV1, str]:
    path = str(bundle.path / "spec.kv")
    spec = decode_kv(bundle.spec_kv, path=path)
    check_v1(spec, path=path)
    shash = spec_hash(spec)
    if bundle.manifest is not None and bundle.manifest.get("spec_sha256") not in (None, shash):
        raise ArtifactError(
            f"{bundle.path}: spec.kv hashes to {shash}, the manifest says "
            f"{bundle.manifest.get('spec_sha256')}"
        )
    return spec, shash


def run_replay(req: ReplayRequest, *, progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Replay ``req.last_n`` journal records of ``req.journal_lane`` from the bundle; write the audit.

    Raises :class:`UsageError` (exit 2) for bad arguments, a missing bundle or lane, or an existing
    ``out``; :class:`SpecError` (exit 3) when the bundle's spec is invalid; :class:`PolicyRefused`
    (exit 4) when execute mode is not approved and allowed (no audit is written then, nothing ran);
    :class:`ReplayStopped` (exit 4) when a limit stopped the replay and :class:`ActionFailed`
    (exit 1) when a performed action finally failed — both after writing the audit.
    """
    limits = _check_request(req)
    with _open_bundle(req.bundle) as bundle:
        spec, shash = _spec_of(bundle)
        if isinstance(spec, LaneGraphSpecV1) and spec.lane(req.journal_lane) is None:
            have = ", ".join(lane.name for lane in spec.lanes)
            raise UsageError(f"--journal-lane={req.journal_lane}: no such lane in the bundle's spec ({have})")
        try:
            journal_dir = bundle.journal_path(req.journal_lane)
        except ArtifactError as exc:
            raise UsageError(str(exc)) from None
        selection = select_records(journal_dir, req.last_n)
        _reader(os.fspath(journal_dir)).check_spec_hash(shash, selection.start)
        spec_path = str(bundle.path / "spec.kv")
        dead_letter = os.path.splitext(os.path.abspath(req.out))[0] + ".dead-letter"
        options = RunOptions(sp=True, posture=req.posture, approval=req.approval, approval_key_set=req.key_set,
                             policy_file=req.policy_file, replay_mode=req.mode, dead_letter_dir=dead_letter,
                             memory_journals=True)
        auditor = _Auditor(ReplayBudget(limits))
        session = RunSession(spec_path, options, wrap_stage=auditor.wrap)
        sink = CollectSink()
        outputs = sink.items
        stopped: _Stop | None = None
        failure: Exception | None = None
        done = 0
        samples: list[str] = []
        selected_bytes = 0
        slot_bytes = spec.slot_bytes if isinstance(spec, SingleRingSpecV1) else None
        with session:
            session.start(sink)
            engine = session.engine
            for record in selection.records():
                # Every selected record is described in the audit, replayed or not.
                samples.append("sha256:" + hashlib.sha256(record).hexdigest())
                selected_bytes += len(record)
                if stopped is not None or failure is not None:
                    continue
                try:
                    try:
                        auditor.budget.charge(input_bytes=len(record))
                    except PolicyRefused as exc:
                        raise _Stop("max_bytes", str(exc)) from None
                    if slot_bytes is None:
                        engine.offer_lane(req.journal_lane, [record])
                    elif len(record) > slot_bytes:
                        raise PipelineFailed(f"journal record of {len(record)} bytes exceeds the ring's "
                                             f"slot_bytes={slot_bytes}")
                    else:
                        session.publish([record])
                except _Stop as stop:
                    stopped = stop
                    continue
                except (ActionFailed, PipelineFailed) as exc:
                    failure = exc
                    continue
                done += 1
                if progress is not None:
                    progress(done, selection.count)
        gate = session.gate
        actions = auditor.actions
        if stopped is not None:
            outcome = ReplayAuditOutcome(
                False,
                done,
                stopped.by,
                f"replay stopped after {done} of {selection.count} record(s): {stopped.message}",
            )
        elif failure is not None:
            outcome = ReplayAuditOutcome(
                False,
                done,
                "error",
                f"replay failed at record {done + 1} of {selection.count}: {failure}",
            )
        else:
            outcome = ReplayAuditOutcome(True, done)
        audit = ReplayAudit(
            created_unix_ms=int(time.time() * 1000),
            bundle_dir=os.path.abspath(req.bundle),
            spec_sha256=shash,
            input=ReplayAuditInput(
                req.journal_lane,
                os.path.abspath(req.bundle) + "/journals/" + req.journal_lane,
                req.last_n,
                selection.scanned_records,
                selected_bytes,
                tuple(samples),
            ),
            policy=ReplayAuditPolicy(
                req.posture, req.approval is not None or (gate is not None and gate.approval is not None), req.mode
            ),
            actions=tuple(actions),
            outcome=outcome,
        )
        write_replay_audit(req.out, audit)
        if stopped is not None:
            raise ReplayStopped(outcome.message or stopped.message, req.out)
        if failure is not None:
            if isinstance(failure, ActionFailed):
                raise ActionFailed(f"{failure}; the audit of what was done is {req.out}") from failure
            raise PipelineFailed(f"{failure}; the audit of what was done is {req.out}") from failure
        decisions = tuple(d.to_json() for d in gate.decisions) if gate is not None else ()
        return ReplayResult(audit, Path(req.out), tuple(outputs), decisions)
