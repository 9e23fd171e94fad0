"""``Pipeline``: the small Python API over both SingleRing executors.

    with Pipeline.open("examples/chain.kv", sp=False, wait="block") as p:
        p.publish_many([b"abc", b"def"])
    for out in p.outputs():          # after close: everything, in order per shard
        ...

``on_output(shard, message)`` may be given instead, to stream outputs as they leave egress (it is
called from an egress thread in multi-process mode). Without it, outputs collect in an unbounded
queue that :meth:`Pipeline.outputs` drains; for long streams pass ``on_output``.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .._errors import UnsupportedSpecError
from .._stage import ResolvedStage, StageContext
from ..spec.kv import load_spec_file, spec_hash
from ..spec.model import PipelineSpecV1, SingleRingSpecV1
from .registry import close_stages, resolve_stages
from .sharding import BytesLike
from .sp import SpExecutor

__all__ = ["OutputFn", "Pipeline"]

OutputFn = Callable[[int, bytes], None]


class Pipeline:
    """A running SingleRing pipeline. Use :meth:`open`; always :meth:`close` (or ``with``)."""

    def __init__(self, spec: SingleRingSpecV1, stages: list[ResolvedStage], executor: Any, *, sp: bool,
                 outputs: queue.SimpleQueue[bytes] | None, emit: OutputFn) -> None:
        self.spec = spec
        self._emit = emit
        self.sp = sp
        self._stages = stages
        self._exec = executor
        self._queue = outputs
        self._closed = False

    @classmethod
    def open(cls, spec: PipelineSpecV1 | str | os.PathLike[str], *, sp: bool = False,
             context: StageContext | None = None, ring_path: str | None = None, wait: str = "backoff",
             on_output: OutputFn | None = None, heartbeat_timeout: float = 30.0,
             max_restarts: int = 5) -> Pipeline:
        """Validate, resolve every stage once, and start the executor.

        Raises :class:`~byteor.SpecError` (invalid spec, unresolvable stage),
        :class:`~byteor.UnsupportedSpecError` (LaneGraph, or no native core for multi-process),
        :class:`~byteor.ShmError` (ring files).
        """
        from ..spec.validate import check_v1

        path = os.fspath(spec) if isinstance(spec, str | Path | os.PathLike) else None
        loaded = load_spec_file(path) if path is not None else spec
        assert not isinstance(loaded, str | os.PathLike)
        check_v1(loaded, path=path)
        if not isinstance(loaded, SingleRingSpecV1):
            raise UnsupportedSpecError("Pipeline runs SingleRing specs; LaneGraph runs through "
                                       "byteor.runtime.lanegraph")
        from .support import unsupported_reasons

        reasons = unsupported_reasons(loaded, sp=sp)
        if reasons:
            raise UnsupportedSpecError("; ".join(reasons))
        digest = spec_hash(loaded)
        ctx = context or StageContext(spec_hash=digest,
                                      spec_dir=os.path.dirname(os.path.abspath(path)) if path else ".")
        stages = resolve_stages(loaded, ctx)
        q: queue.SimpleQueue[bytes] | None = None
        emit: OutputFn
        if on_output is None:
            q = queue.SimpleQueue()
            put = q.put

            def emit(_shard: int, data: bytes) -> None:
                put(data)
        else:
            emit = on_output
        try:
            if sp:
                executor: Any = SpExecutor(loaded, stages)
            else:
                from .mp import MpExecutor

                def batch_sink(shard: int, batch: list[bytes]) -> None:
                    for item in batch:
                        emit(shard, item)

                executor = MpExecutor(loaded, stages, spec_hash=digest, sink=batch_sink, context=ctx,
                                      ring_path=ring_path, wait=wait, heartbeat_timeout=heartbeat_timeout,
                                      max_restarts=max_restarts)
                executor.start()
        except BaseException:
            close_stages(stages)
            raise
        return cls(loaded, stages, executor, sp=sp, outputs=q, emit=emit)

    def publish(self, data: BytesLike) -> None:
        """Publish one message (blocks while the ring is full)."""
        if self.sp:
            ex: SpExecutor = self._exec
            shard = ex.router.route(data)
            out = ex.process(data)
            if out is not None:
                self._emit(shard, out)
        else:
            self._exec.publish(data)

    def publish_many(self, items: Sequence[BytesLike]) -> None:
        """Publish a batch (one claim and one cursor store per ring-sized chunk in multi-process)."""
        if self.sp:
            for item in items:
                self.publish(item)
        else:
            self._exec.publish_many(items)

    def outputs(self) -> Iterator[bytes]:
        """The output messages collected so far (everything, once closed). Needs no ``on_output``."""
        if self._queue is None:
            raise RuntimeError("outputs() is not available when on_output was given")
        q = self._queue
        while True:
            try:
                yield q.get_nowait()
            except queue.Empty:
                return

    def stage_pids(self) -> list[int]:
        """The live stage process ids (multi-process only; empty for ``--sp``)."""
        return [] if self.sp else list(self._exec.stage_pids())

    def stats(self) -> dict[str, Any]:
        ex = self._exec
        out: dict[str, Any] = {"messages_in": ex.messages_in, "messages_out": ex.messages_out,
                               "dropped": ex.dropped}
        if not self.sp:
            out["restarts"] = ex.restarts()
            out["ring_dir"] = ex.ring_dir
        return out

    def close(self) -> None:
        """Drain (every published message reaches the outputs), stop the processes, unlink the rings.

        Raises :class:`~byteor.PipelineFailed` if a stage failed during the run.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if not self.sp:
                self._exec.close()
        finally:
            close_stages(self._stages)

    def abort(self) -> None:
        """Stop without draining (kills the stage processes) and remove the ring files."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.sp:
                self._exec.abort()
        finally:
            close_stages(self._stages)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()
