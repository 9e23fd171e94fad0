"""Sources and sinks: the one interface between the outside world and a running pipeline.

A :class:`Source` hands the run session batches of messages without blocking; a :class:`Sink`
takes the messages that left egress. Positions make at-least-once delivery possible: each batch a
source returns carries an opaque ``position``, and the session calls :meth:`Source.commit` with it
only once every message of that batch, and of every batch before it, has left egress (written to
the sinks and confirmed by their :meth:`Sink.flush`) or was dropped on purpose (a stage returned
``None``/``DROP``, a lane dropped it under ``on_full=drop_newest``). Commits arrive in batch order.

Lifecycle: the session calls ``open()`` once, then ``next_batch`` / ``write`` / ``flush`` /
``commit`` from one thread at a time (a sink may be written from several egress threads, but the
session serialises the calls), then ``close()`` once, also after a failure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Batch", "Ingress", "Sink", "Source"]


@dataclass(frozen=True, slots=True)
class Ingress:
    """What a source feeds, told by :meth:`Source.bind` before :meth:`Source.open`: the ingress
    endpoint's name, the largest message its slots hold and how many messages its ring or lane
    holds (the bound on what is in flight inside the pipeline)."""

    endpoint: str
    slot_bytes: int
    capacity: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Messages a source handed over in one call. ``position`` is the source's own marker for
    "everything up to here" (an offset, a list of acks, a count); None for sources without one."""

    messages: Sequence[bytes]
    position: Any = None


class Source:
    """Base class of every source. Subclasses implement :meth:`next_batch`.

    ``name`` is shown in summaries and errors; it never contains a credential.
    """

    name: str = "source"
    #: True for sources whose :meth:`commit` acknowledges upstream (a broker). The session then
    #: keeps what was taken but not yet committed within the ingress capacity (batches of at most
    #: half of it, a flush and commit before taking more), so a restart after a crash repeats at
    #: most that many messages.
    acks: bool = False
    #: True for a source whose senders wait for the commit before they send more (an ingress server
    #: answering each call once its messages are committed): the session then flushes and commits as
    #: soon as the input goes quiet, instead of at the next ``flush_interval``, which would stall them.
    waits_for_commit: bool = False
    #: Messages the upstream handed over again (a broker's redelivery after a crash or takeover):
    #: an upper bound on the duplicates this run wrote where the broker marks them; shown in the
    #: summary and in :meth:`describe`.
    redelivered: int = 0

    def bind(self, ingress: Ingress) -> None:
        """Told once, before :meth:`open`, what this source feeds (slot size, capacity)."""

    def open(self) -> None:
        """Connect or open; raise :class:`~byteor.UsageError` (bad argument) or
        :class:`~byteor.AdapterError` (cannot reach it) naming the source."""

    def next_batch(self, max_messages: int) -> Batch | None:
        """Up to ``max_messages`` messages available now, without blocking: an empty batch when
        there is nothing yet, ``None`` once the source has ended (a file's end, ``--max-messages``).

        A malformed input raises :class:`~byteor.UsageError` naming where (line, byte offset), after
        the messages before it were returned by earlier calls."""
        raise NotImplementedError

    def wait(self, timeout: float) -> None:
        """Sleep until a message may be available, at most ``timeout`` seconds. The default sleeps;
        sources with a file descriptor or a client library wait on it instead."""
        time.sleep(min(timeout, 0.001))

    def commit(self, position: Any) -> None:
        """Everything up to ``position`` (a :attr:`Batch.position`) left egress or was dropped on
        purpose: acknowledge it upstream. Called in batch order; the default does nothing."""

    def close(self) -> None:
        """Release resources; called once, also after a failure."""

    def describe(self) -> dict[str, Any]:
        """What observers show about this source (position, lag, connection state)."""
        return {"name": self.name}


class Sink:
    """Base class of every sink. Subclasses implement :meth:`write` and usually :meth:`flush`.

    ``flush_interval`` is the longest time written messages may wait before the session flushes:
    the bound on how late output becomes visible (a file) or confirmed (a broker)."""

    name: str = "sink"
    flush_interval: float = 0.2

    def open(self) -> None:
        """Connect or open; errors as for :meth:`Source.open`."""

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        """Take messages that left egress, in order per ``shard`` (a SingleRing shard; 0 for a
        LaneGraph egress endpoint, which has a sink of its own). May buffer."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make everything written so far visible or durable (file flush, broker confirmation).
        After it returns, those messages count as having left egress."""

    def abandon(self) -> None:
        """The run stops at once (a failure, a second stop signal): the flush that follows keeps
        what it can without waiting on anything outside (a subscriber to come, a broker to return)."""

    def close(self) -> None:
        """Flush and release; called once, also after a failure."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}
