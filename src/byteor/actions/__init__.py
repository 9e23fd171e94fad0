"""Side-effecting stages: ``http_post:<url>`` and ``exec:PROGRAM|ARG|...``, the dead-letter journal
and redrive. Executors resolve them with :func:`resolve_action` after the policy gate has decided."""

from __future__ import annotations

from ._resolve import Action, admission, build_action, family_of, resolve_action
from .deadletter import DeadLetterJournal, DeadLetterRecord
from .exec_action import ExecAction, ExecCmd, parse_exec_key
from .http_post import HttpPostAction, TargetUrl, idempotency_key, parse_target_url, url_admitted
from .retry import RetryConfig

__all__ = [
    "Action",
    "DeadLetterJournal",
    "DeadLetterRecord",
    "ExecAction",
    "ExecCmd",
    "HttpPostAction",
    "RetryConfig",
    "TargetUrl",
    "admission",
    "build_action",
    "family_of",
    "idempotency_key",
    "parse_exec_key",
    "parse_target_url",
    "resolve_action",
    "url_admitted",
]
