"""Replay policy and replay limits, for the replay work to enforce.

Replay policy per posture (from the policy table): ``disabled`` (replay refused), ``dry_run_only``
(every action recorded, never performed) or ``allowed`` (execute mode may perform actions when the
``replay_execute`` rule and an approval carrying ``replay_execute`` allow it). The replay mode
defaults to ``dry_run``.

Limits bound what one replay may do: at most :data:`DEFAULT_MAX_ACTIONS` actions and
:data:`DEFAULT_MAX_INPUT_BYTES` of selected input by default. An operator may lower them, never
raise them (:meth:`ReplayLimits.narrowed`). :class:`ReplayBudget` counts as the replay goes and
raises :class:`~byteor.PolicyRefused` (exit 4) at the first step over a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import PolicyRefused, UsageError
from .decisions import REPLAY_MODES, REPLAY_POLICIES, policy_table

__all__ = [
    "DEFAULT_MAX_ACTIONS",
    "DEFAULT_MAX_INPUT_BYTES",
    "DEFAULT_REPLAY_MODE",
    "REPLAY_MODES",
    "REPLAY_POLICIES",
    "ReplayBudget",
    "ReplayLimits",
    "replay_policy",
]

DEFAULT_MAX_ACTIONS = 10_000
DEFAULT_MAX_INPUT_BYTES = 128 * 1024 * 1024
DEFAULT_REPLAY_MODE = "dry_run"


def replay_policy(posture: str, policy_file: str | None = None) -> str:
    """``disabled``, ``dry_run_only`` or ``allowed`` for ``posture`` under the effective table."""
    return policy_table(policy_file).rules(posture).replay


@dataclass(frozen=True)
class ReplayLimits:
    max_actions: int = DEFAULT_MAX_ACTIONS
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES

    def narrowed(self, *, max_actions: int | None = None, max_input_bytes: int | None = None) -> ReplayLimits:
        """Lower limits (``None`` keeps one). A value above the current limit, or negative, is a
        :class:`UsageError`: limits can only be tightened."""
        actions = self.max_actions if max_actions is None else max_actions
        size = self.max_input_bytes if max_input_bytes is None else max_input_bytes
        if actions < 0 or actions > self.max_actions:
            raise UsageError(f"replay max actions must be between 0 and {self.max_actions}, got {actions}")
        if size < 0 or size > self.max_input_bytes:
            raise UsageError(f"replay max input bytes must be between 0 and {self.max_input_bytes}, "
                             f"got {size}")
        return ReplayLimits(actions, size)

    def check_input(self, selected_bytes: int) -> None:
        """Refuse a selection larger than ``max_input_bytes`` before anything is replayed."""
        if selected_bytes > self.max_input_bytes:
            raise PolicyRefused(f"replay input is {selected_bytes} bytes, over the limit of "
                                f"{self.max_input_bytes} bytes")


class ReplayBudget:
    """Counts actions and input bytes of one replay against its :class:`ReplayLimits`."""

    __slots__ = ("actions", "input_bytes", "limits")

    def __init__(self, limits: ReplayLimits | None = None) -> None:
        self.limits = limits or ReplayLimits()
        self.actions = 0
        self.input_bytes = 0

    def charge(self, *, actions: int = 0, input_bytes: int = 0) -> None:
        """Add to the counters; :class:`PolicyRefused` when either goes over its limit."""
        if self.actions + actions > self.limits.max_actions:
            raise PolicyRefused(f"replay would perform more than {self.limits.max_actions} actions "
                                "(replay limit)")
        if self.input_bytes + input_bytes > self.limits.max_input_bytes:
            raise PolicyRefused(f"replay input would exceed {self.limits.max_input_bytes} bytes "
                                "(replay limit)")
        self.actions += actions
        self.input_bytes += input_bytes
