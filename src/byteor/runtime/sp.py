"""The ``--sp`` SingleRing engine: one process, deterministic, no shared memory.

Each message is copied into one slot-sized buffer and runs through the stages in index order: the
reference semantics every executor must reproduce (whatever the executor, each stage sees exactly
the bytes of running the stages one after another). A stage returns the new length or
:data:`~byteor.DROP`; a dropped message skips the remaining stages and egress. With ``shards=N``
each message is routed by the same :class:`~byteor.runtime.sharding.Router` as the multi-process
executor, so both put every message on the same shard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._errors import UsageError
from .._stage import DROP, ResolvedStage, StageCall, stage_failure
from ..spec.model import SingleRingSpecV1
from .sharding import BytesLike, Router

__all__ = ["SpExecutor"]

#: ``sink(shard, batch)`` receives the output messages of one offered batch, per shard, in order.
Sink = Callable[[int, list[bytes]], None]


class SpExecutor:
    """Runs messages through resolved stages in the calling thread.

    Raises :class:`~byteor.UsageError` for a message longer than ``slot_bytes``,
    :class:`~byteor.PipelineFailed` when a stage raises or breaks its form's contract (the stage and
    the message are named), and lets a stage's own :class:`~byteor.ByteorError` (e.g.
    ``ActionFailed``) propagate.
    """

    preferred_batch = 256

    def __init__(self, spec: SingleRingSpecV1, stages: list[ResolvedStage], sink: Sink | None = None) -> None:
        if len(stages) != len(spec.stages):
            raise ValueError("one resolved stage per spec stage is required")
        self.spec = spec
        self.router = Router(spec)
        self._sink = sink
        self._slot_bytes = spec.slot_bytes
        self._buf = bytearray(spec.slot_bytes)
        self._view = memoryview(self._buf)
        self._ro_view = self._view.toreadonly()
        self._calls = [StageCall(st, spec.slot_bytes) for st in stages]
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
        index = self.messages_in
        self.messages_in += 1
        view = self._view
        view[:n] = src.cast("B") if src.format != "B" or src.ndim != 1 else src
        length = n
        for i, call in enumerate(self._calls):
            try:
                length = call.call(view if call.writes else self._ro_view, length)
            except Exception as exc:
                failure = stage_failure(self._names[i], index, exc)
                if failure is exc:
                    raise
                raise failure from exc
            if length == DROP:
                self.dropped += 1
                return None
        self.messages_out += 1
        return bytes(view[:length])

    # -- the engine interface the run session drives ------------------------------------------------

    def start(self) -> None:
        return None

    def offer(self, endpoint: int, items: Sequence[BytesLike], timeout: float = 0.0) -> int:
        """Process every item now; outputs go to the sink, per shard, before this returns."""
        route = self.router.route
        process = self.process
        out: dict[int, list[bytes]] = {}
        try:
            for msg in items:
                shard = route(msg)
                result = process(msg)
                if result is not None:
                    out.setdefault(shard, []).append(result)
        finally:  # what was processed before a failure still leaves egress
            if self._sink is not None:
                for shard, batch in out.items():
                    self._sink(shard, batch)
        return len(items)

    def mark(self) -> tuple[int, ...]:
        return (self.messages_in,)

    def progress(self) -> tuple[int, ...]:
        return (self.messages_in,)

    def tick(self) -> None:
        return None

    def drain(self) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None

    def fill(self) -> float | None:
        return None

    def restarts(self) -> dict[str, int]:
        return {}
