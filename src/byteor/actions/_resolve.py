"""Resolver for the side-effecting stage families ``http_post:*`` and ``exec:*``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._errors import ActionFailed, ByteorError, PolicyRefused, SpecError
from .._formats import parse_rfc3339
from .._redact import scrub
from .._stage import APPROVAL_COVERS, APPROVAL_EXPIRES_AT, APPROVAL_ID, ResolvedStage, StageContext
from ..obs import counters
from ..obs.events import emit
from ..policy.admission import action_family as family_of
from ..policy.admission import admission
from ..policy.decisions import ALLOW, DRY_RUN_ONLY, REQUIRE_APPROVAL
from . import exec_action, http_post
from .deadletter import DeadLetterJournal, DeadLetterRecord
from .exec_action import ExecAction
from .http_post import HttpPostAction, idempotency_key

__all__ = ["DEAD_LETTER_DIRNAME", "Action", "admission", "build_action", "family_of", "resolve_action"]

Action = HttpPostAction | ExecAction
#: Where failed actions go when the context names no dead-letter directory: next to the spec.
DEAD_LETTER_DIRNAME = "dead-letter"


def build_action(key: str, env: Mapping[str, str] | None = None) -> Action:
    """Parse ``key`` and check the allowlist once; :class:`PolicyRefused` when it is not admitted."""
    reason = admission(key, env)
    if reason is not None:
        raise PolicyRefused(reason)
    if family_of(key) == "http_post":
        return HttpPostAction.from_key(key, env)
    return ExecAction.from_key(key, env)


def _recorder_fn(key: str, family: str, target: str,
                 recorder: Callable[[dict[str, Any]], None] | None) -> Callable[[memoryview, int], int]:
    counted = counters.current().incrementer(counters.WORDS["actions_dry_run"])

    def dry_run(slot: memoryview, length: int) -> int:
        counted()
        if recorder is not None:
            recorder({"action": family, "stage": key, "target": target,
                      "idempotency_key": idempotency_key(slot[:length]), "decision": DRY_RUN_ONLY,
                      "bytes": length})
        return length

    return dry_run


def _approval_expiry(ctx: StageContext, key: str) -> tuple[str, float | None]:
    """When the approval that allowed ``key`` expires (RFC 3339 text, Unix seconds), or ("", None)
    when the key was allowed without one."""
    covers = str(ctx.extra.get(APPROVAL_COVERS, "")).split("\n")
    text = str(ctx.extra.get(APPROVAL_EXPIRES_AT, ""))
    if key not in covers or not text:
        return "", None
    try:
        return text, parse_rfc3339(text).timestamp()
    except ValueError:
        raise PolicyRefused(f"stage {key[:60]!r}: the approval expiry {text[:40]!r} in the run context is not "
                            "an RFC 3339 timestamp") from None


def resolve_action(key: str, ctx: StageContext) -> ResolvedStage:
    """Resolve an action stage once, at startup.

    ``ctx.decisions[key]`` says what to do: ``Allow`` performs the side effect per message;
    ``DryRunOnly`` (or ``ctx.dry_run``) performs nothing and calls ``ctx.recorder`` with action,
    stage, target, idempotency key, decision and byte count. Anything else, or no decision at all,
    is refused here (:class:`PolicyRefused`): the gate must have run. The input bytes are always
    forwarded unchanged. When the stage was allowed by an approval that expires during the run
    (``ctx.extra``, see :data:`~byteor._stage.APPROVAL_EXPIRES_AT`), every message from that moment
    on is dead-lettered (decision ``RequireApproval``) instead of performed, and forwarded. A side
    effect that finally fails is written to the dead-letter journal (``ctx.dead_letter_dir``, else
    ``dead-letter/`` next to the spec) and raises :class:`ActionFailed` so that the pipeline stops
    (stage_failure_policy ``stop_pipeline``).

    Each outcome is counted in this process's row of the run's counters file
    (:func:`byteor.obs.counters.current`): ``actions_performed``, ``actions_failed``,
    ``actions_dead_lettered``, ``actions_dry_run``.
    """
    fam = family_of(key)
    if fam is None:
        raise SpecError(f"not an action stage key: {key[:40]!r}")
    decision = DRY_RUN_ONLY if ctx.dry_run else ctx.decisions.get(key)
    if decision == DRY_RUN_ONLY:
        try:
            if fam == "http_post":
                target = http_post.parse_target_url(key[len(http_post.PREFIX):]).display
            else:
                target = exec_action.parse_exec_key(key).program
        except ValueError as exc:
            raise PolicyRefused(str(exc)) from None
        return ResolvedStage(key=key, fn=_recorder_fn(key, fam, target, ctx.recorder), modifies=False,
                             side_effect=True, family=fam, target=target)
    if decision != ALLOW:
        raise PolicyRefused(f"stage {key[:60]!r}: decision is {decision or 'missing'}; the policy gate must "
                            "allow it before it resolves")
    action = build_action(key)
    target = action.target.display if isinstance(action, HttpPostAction) else action.target
    dl_dir = ctx.dead_letter_dir or os.path.join(ctx.spec_dir, DEAD_LETTER_DIRNAME)
    spec_hash = ctx.spec_hash
    recorder = ctx.recorder
    perform = action.perform
    row = counters.current()
    performed = row.incrementer(counters.WORDS["actions_performed"])
    failed = row.incrementer(counters.WORDS["actions_failed"])
    dead_lettered = row.incrementer(counters.WORDS["actions_dead_lettered"])
    expires_at, expires = _approval_expiry(ctx, key)
    expired_reported = False

    def dead_letter(data: bytes, ikey: str, error: str, decision: str) -> DeadLetterRecord:
        try:
            rec = DeadLetterJournal(dl_dir).append(DeadLetterRecord(
                stage_key=key, family=fam, target=target, idempotency_key=ikey,
                error=scrub(error), decision=decision, spec_hash=spec_hash, input=data))
        except (ByteorError, OSError) as dl_exc:
            emit("action.failed", f"{fam} stage: {error}; dead-letter write to {dl_dir} failed too: {dl_exc}",
                 level="error", action=fam, target=target, dead_letter=None)
            raise ActionFailed(scrub(f"{fam} to {target}: {error}; and the message could not be dead-lettered "
                                     f"in {dl_dir}: {dl_exc}")) from None
        dead_lettered()
        return rec

    def run(slot: memoryview, length: int) -> int:
        nonlocal expired_reported
        data = bytes(slot[:length])
        ikey = idempotency_key(data)
        if expires is not None and time.time() >= expires:
            # The approval that allowed this side effect has run out: keep the message for a redrive
            # under a new approval, perform nothing, and let the pipeline go on.
            why = (f"the approval {ctx.extra.get(APPROVAL_ID, '')} allowing it expired at {expires_at}; "
                   "the side effect was not performed")
            rec = dead_letter(data, ikey, why, REQUIRE_APPROVAL)
            if not expired_reported:
                emit("action.approval_expired", f"{fam} stage {target}: {why}; this and later messages go to the "
                     f"dead-letter journal {dl_dir} (first record {rec.id})", level="warning", action=fam,
                     target=target, dead_letter=rec.id)
                expired_reported = True
            if recorder is not None:
                recorder({"action": fam, "stage": key, "target": target,
                          "idempotency_key": ikey, "decision": REQUIRE_APPROVAL, "bytes": length})
            return length
        try:
            perform(data, ikey)
        except ActionFailed as exc:
            failed()
            rec = dead_letter(data, ikey, str(exc), ALLOW)
            emit("action.failed", f"{fam} stage failed: {exc}; dead-lettered as {rec.id} in {dl_dir}",
                 level="error", action=fam, target=target, dead_letter=rec.id)
            raise ActionFailed(scrub(f"{fam} to {target} failed: {exc}; the message is in the dead-letter "
                                     f"journal {dl_dir} (record {rec.id})")) from exc
        performed()
        if recorder is not None:
            recorder({"action": fam, "stage": key, "target": target,
                      "idempotency_key": ikey, "decision": ALLOW, "bytes": length})
        return length

    return ResolvedStage(key=key, fn=run, modifies=False, side_effect=True, family=fam, target=target,
                         close=action.close)
