"""Read-only views of running rings for the ``snapshot`` verb (text tables and JSON).

A ring path is a ring file or a ring directory (every ``*.ring`` in it, one per shard). Nothing here
writes to a ring or waits on it: the cursors, gating cells and participant table are loaded once.
"""

from __future__ import annotations

import os
from typing import Any

from .._errors import ShmError, UsageError
from ..shm import RingSnapshot, take_snapshot
from ._stage_main import ROLE_EGRESS, ROLE_LANE_BASE, ROLE_PRODUCER, ROLE_STAGE_BASE

__all__ = ["render_snapshots", "ring_paths", "ring_snapshots", "role_name"]


def role_name(role: int) -> str:
    """A participant role id as the runtimes register it."""
    if role == ROLE_PRODUCER:
        return "producer"
    if role == ROLE_EGRESS:
        return "egress"
    if role >= ROLE_LANE_BASE:
        return f"lanegraph role {role - ROLE_LANE_BASE}"
    if role >= ROLE_STAGE_BASE:
        return f"stage {role - ROLE_STAGE_BASE}"
    return f"role {role}"


def ring_paths(path: str) -> list[str]:
    """The ring files a ``--ring-path`` names (a file, or a directory's ``*.ring`` files, sorted)."""
    if os.path.isdir(path):
        files = sorted((f for f in os.listdir(path) if f.endswith(".ring")), key=_shard_order)
        if not files:
            raise ShmError(f"{path}: no *.ring files in this directory (is the pipeline running?)")
        return [os.path.join(path, f) for f in files]
    if not os.path.exists(path):
        raise UsageError(f"--ring-path {path} does not exist (is the pipeline running?)")
    return [path]


def _shard_order(name: str) -> tuple[int, str]:
    stem = name.removesuffix(".ring")
    _, _, tail = stem.rpartition("-")
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def ring_snapshots(path: str) -> list[RingSnapshot]:
    """Snapshot every ring under ``path``; :class:`~byteor.ShmError` if one cannot be attached."""
    return [take_snapshot(p) for p in ring_paths(path)]


def render_snapshots(snaps: list[RingSnapshot]) -> list[Any]:
    """Rich tables: one per ring (cells) and one for its participants."""
    from rich.table import Table

    out: list[Any] = []
    for snap in snaps:
        stop = ", stopping" if snap.stop else ""
        cells = Table(title=f"{snap.path}  cursor {snap.cursor}  fill {snap.fill}/{snap.capacity}{stop}",
                      title_justify="left")
        for col in ("consumer", "gating", "lag"):
            cells.add_column(col, justify="right" if col != "consumer" else "left")
        for st in snap.stages:
            cells.add_row(f"stage {st.index}", str(st.gating), str(st.lag))
        if snap.egress is not None:
            cells.add_row("egress", str(snap.egress.gating), str(snap.egress.lag))
        out.append(cells)
        parts = Table(title="participants", title_justify="left")
        for col in ("role", "pid", "alive", "heartbeat age"):
            parts.add_column(col)
        for p in snap.participants:
            parts.add_row(role_name(p.role), str(p.pid), "yes" if p.alive else "NO",
                          f"{p.heartbeat_age_ms:.0f} ms")
        out.append(parts)
    return out
