"""Lanes: the channels of a LaneGraph.

* :mod:`byteor.lanes.journal`: journal lanes, an append-only segmented log on disk.
* :mod:`byteor.lanes.shm`: ``events``, ``mpsc`` and ``fanout`` lanes over the native shared-memory ring.
* :mod:`byteor.lanes.memory`: the same lane kinds in process memory, for the single-process runner.
"""

from __future__ import annotations

from .journal import JournalCorrupt, JournalOverrun, JournalReader, JournalSubscription, JournalWriter

__all__ = ["JournalCorrupt", "JournalOverrun", "JournalReader", "JournalSubscription", "JournalWriter"]
