"""Python views over byteor's shared-memory rings: lifecycle, header checks, snapshots.

The ring itself is :class:`byteor._native.Ring` (layout documented in ``docs/performance.md`` and
at the top of ``_native/core.c``). This package creates and attaches ring files (mapping native
attach failures to :class:`~byteor.ShmError` with the path), removes them, finds stale ones, and
reads and writes ``single_ring_snapshot.json``.
"""

from __future__ import annotations

from ._files import (
    DEFAULT_DIR,
    attach_ring,
    create_ring,
    hash_bytes,
    pid_alive,
    private_ring_dir,
    ring_files_under,
    stale_files,
    unlink,
)
from .snapshot import (
    GatingView,
    ParticipantView,
    RingSnapshot,
    read_ring_snapshot,
    take_snapshot,
    write_ring_snapshot,
    write_ring_snapshot_file,
)

__all__ = [
    "DEFAULT_DIR",
    "GatingView",
    "ParticipantView",
    "RingSnapshot",
    "attach_ring",
    "create_ring",
    "hash_bytes",
    "pid_alive",
    "private_ring_dir",
    "read_ring_snapshot",
    "ring_files_under",
    "stale_files",
    "take_snapshot",
    "unlink",
    "write_ring_snapshot",
    "write_ring_snapshot_file",
]
