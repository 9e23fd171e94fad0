"""``Pipeline``: the Python API over the run session, for SingleRing and LaneGraph specs.

    with Pipeline.open("examples/chain.kv", wait="block") as p:    # sp=True for one process
        p.publish_many([b"abc", b"def"])
    for out in p.outputs():          # after close: everything, in order per shard
        ...

    def up(msg: bytes) -> bytes:     # stages can be plain module-level functions
        return msg.upper()

    with Pipeline.chain(up, name="shout", sp=True) as p:
        p.publish(b"hi")

``on_output(key, message)`` may be given instead, to stream outputs as they leave egress (it is
called from an egress thread in multi-process mode); ``key`` is the shard index (SingleRing) or the
egress endpoint's name (LaneGraph). Without it, outputs collect in an unbounded queue that
:meth:`Pipeline.outputs` drains; for long streams pass ``on_output``.

Side-effecting stages go through the same policy gate as ``byteor run``: ``posture``,
``approval`` and ``approval_key_set`` are checked at :meth:`Pipeline.open`, which raises
:class:`~byteor.PolicyRefused` (nothing runs) or writes the same policy audit record.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from ..edges.base import Sink
from ..edges.files import CallbackSink
from ..ops.runtime_config import RuntimeConfig
from ..spec.builders import single_ring_chain
from ..spec.model import PipelineSpecV1
from .session import RunOptions, RunSession
from .sharding import BytesLike

__all__ = ["OutputFn", "Pipeline"]

OutputFn = Callable[[Any, bytes], None]


class Pipeline:
    """A running pipeline. Use :meth:`open` (or :meth:`chain`); always :meth:`close` (or ``with``)."""

    def __init__(self, session: RunSession, outputs: queue.SimpleQueue[bytes] | None) -> None:
        self._session = session
        self.spec = session.spec
        self.sp = session.options.sp
        self._queue = outputs
        self._closed = False
        self._summary: dict[str, Any] | None = None

    @classmethod
    def open(cls, spec: PipelineSpecV1 | str | os.PathLike[str], *, sp: bool = False, ring_path: str | None = None,
             wait: str = "backoff", on_output: OutputFn | None = None, heartbeat_timeout: float | None = None,
             max_restarts: int = 5, posture: str = "dev", dry_run: bool = False, approval: str | None = None,
             approval_key_set: str | None = None, policy_file: str | None = None, policy_audit: str | None = None,
             journal_dir: str | None = None, fsync: str | None = None, tuning: str | None = None,
             config: RuntimeConfig | None = None) -> Pipeline:
        """Validate, gate, resolve every stage once, and start the executor.

        ``spec`` is a path or a spec object (built with the builders, whose stages may be function
        objects). ``ring_path`` is the ring directory (SingleRing) or lane directory (LaneGraph).

        Raises :class:`~byteor.SpecError` (invalid spec, unresolvable stage),
        :class:`~byteor.UnsupportedSpecError`, :class:`~byteor.PolicyRefused` (the gate refused a
        side-effecting stage; nothing ran), :class:`~byteor.ShmError` (ring files).
        """
        options = RunOptions(sp=sp, posture=posture, dry_run=dry_run, approval=approval,
                             approval_key_set=approval_key_set, policy_file=policy_file, policy_audit=policy_audit,
                             ring_path=ring_path, journal_dir=journal_dir, fsync=fsync, wait=wait, tuning=tuning,
                             config=config or RuntimeConfig(), heartbeat_timeout=heartbeat_timeout,
                             max_restarts=max_restarts)
        session = RunSession(spec, options)
        q: queue.SimpleQueue[bytes] | None = None
        fn: OutputFn
        if on_output is None:
            q = queue.SimpleQueue()
            put = q.put

            def fn(_key: Any, data: bytes) -> None:
                put(data)
        else:
            fn = on_output
        sinks: dict[str, Sink]
        if session.is_lanegraph:
            sinks = {ep: CallbackSink(fn, endpoint=ep) for ep in session.egress}
        else:
            sinks = {"*": CallbackSink(fn)}
        try:
            session.start(sinks)
        except BaseException:
            session.abort()
            raise
        return cls(session, q)

    @classmethod
    def chain(cls, *stages: Callable[..., Any] | str | tuple[str, int], name: str = "chain",
              capacity: int = 1024, slot_bytes: int = 256, **open_kw: Any) -> Pipeline:
        """Open a linear SingleRing pipeline of ``stages``: module-level functions (their
        ``py:<module>:<function>`` keys), ``"add_u8"``/``("add_u8", d)``, ``"identity"`` or stage
        keys. ``open_kw`` are :meth:`open`'s options."""
        return cls.open(single_ring_chain(name, *stages, capacity=capacity, slot_bytes=slot_bytes), **open_kw)

    @property
    def session(self) -> RunSession:
        return self._session

    def publish(self, data: BytesLike, endpoint: str | None = None) -> None:
        """Publish one message (blocks while the pipeline is full). ``endpoint`` names the ingress
        endpoint of a LaneGraph with several."""
        self._session.publish([data], endpoint)

    def publish_many(self, items: Sequence[BytesLike], endpoint: str | None = None) -> None:
        """Publish a batch (one claim and one cursor store per ring-sized chunk in multi-process)."""
        self._session.publish(items, endpoint)

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
        """The live stage or role process ids (multi-process only; empty for ``--sp``)."""
        engine = self._session.engine
        if self.sp or engine is None:
            return []
        return list(engine.stage_pids())

    def stats(self) -> dict[str, Any]:
        n_in, n_out, _fill = self._session.stats()
        out: dict[str, Any] = {"messages_in": n_in, "messages_out": n_out}
        summary = self._session.summary()
        out["dropped"] = summary["dropped"]
        if not self.sp:
            out["restarts"] = summary.get("restarts", {})
            out["ring_dir"] = self._session.ring_path
        return out

    def close(self) -> dict[str, Any]:
        """Drain (every published message reaches the outputs), stop the processes, remove the
        shared-memory files; returns the run summary (the one ``byteor run --json`` prints).

        Raises :class:`~byteor.PipelineFailed` if a stage failed during the run.
        """
        if not self._closed:
            self._closed = True
            self._summary = self._session.close()
        assert self._summary is not None
        return self._summary

    def abort(self) -> None:
        """Stop without draining (kills the stage processes) and remove the shared-memory files."""
        if not self._closed:
            self._closed = True
            self._session.abort()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()
