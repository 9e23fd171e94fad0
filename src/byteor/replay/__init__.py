"""Offline replay of journal records from an incident bundle, dry-run first, always audited."""

from __future__ import annotations

from ._engine import MODES, ReplayRequest, ReplayResult, ReplayStopped, run_replay, select_records

__all__ = ["MODES", "ReplayRequest", "ReplayResult", "ReplayStopped", "run_replay", "select_records"]
