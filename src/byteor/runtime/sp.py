"""The ``--sp`` executor: one process, deterministic, no shared memory.

Each message is copied into one slot-sized buffer and runs through the stages in index order: the
reference semantics of design A2 that every executor must reproduce. A stage returns the new length
or :data:`~byteor.DROP`; a dropped message skips the remaining stages and egress.
With ``shards=N`` each message is routed by the same :class:`~byteor.runtime.sharding.Router` as the
multi-process executor, so both put every message on the same shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .._errors import ByteorError, PipelineFailed, UsageError
from .._stage import DROP, ResolvedStage
from ..spec.model import SingleRingSpecV1
from .sharding import BytesLike, Router

__all__ = ["SpExecutor"]

#: ``sink(shard, message)`` receives each output message.
Sink = Callable[[int, bytes], None]


class SpExecutor:
    """Runs messages through resolved stages in the calling thread.

    Raises :class:`~byteor.UsageError` for a message longer than ``slot_bytes``,
    :class:`~byteor.PipelineFailed` when a stage raises or returns an impossible length (the
    stage is named), and lets a stage's own :class:`~byteor.ByteorError` (e.g. ``ActionFailed``)
    propagate.
    """

    def __init__(self, spec: SingleRingSpecV1, stages: list[ResolvedStage]) -> None:
        if len(stages) != len(spec.stages):
            raise ValueError("one resolved stage per spec stage is required")
        self.spec = spec
        self.router = Router(spec)
        self._slot_bytes = spec.slot_bytes
        self._buf = bytearray(spec.slot_bytes)
        self._view = memoryview(self._buf)
        self._fns = [st.fn for st in stages]
        self._names = [f"stage {i} {st.id!r}" for i, st in enumerate(spec.stages)]
        self.messages_in = 0
        self.messages_out = 0
        self.dropped = 0

    def process(self, msg: BytesLike) -> bytes | None:
        """Run one message through every stage; the output bytes, or ``None`` if it was dropped."""
        src = memoryview(msg)
        n = src.nbytes
        if n > self._slot_bytes:
            raise UsageError(f"message {self.messages_in} is {n} bytes, larger than "
                             f"pipeline.ring.slot_bytes={self._slot_bytes}")
        self.messages_in += 1
        view = self._view
        view[:n] = src.cast("B") if src.format != "B" or src.ndim != 1 else src
        length = n
        for i, fn in enumerate(self._fns):
            try:
                new = fn(view, length)
            except ByteorError:
                raise
            except Exception as exc:
                raise PipelineFailed(f"{self._names[i]} failed on message {self.messages_in - 1}: "
                                     f"{type(exc).__name__}: {exc}") from exc
            if new == DROP:
                self.dropped += 1
                return None
            if not isinstance(new, int) or new < 0 or new > self._slot_bytes:
                raise PipelineFailed(f"{self._names[i]} returned {new!r}; expected a length in "
                                     f"0..{self._slot_bytes} or DROP")
            length = new
        self.messages_out += 1
        return bytes(view[:length])

    def run(self, messages: Iterable[BytesLike], sink: Sink) -> None:
        """Process every message in order, passing each output to ``sink(shard, data)``."""
        route = self.router.route
        process = self.process
        for msg in messages:
            shard = route(msg)
            out = process(msg)
            if out is not None:
                sink(shard, out)
