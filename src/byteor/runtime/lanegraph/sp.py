"""The single-process LaneGraph engine (``run --sp``): every role in one thread, deterministically.

Scheduling is a fixed round: an ingress endpoint offers up to one lane's capacity of input
messages, then every role runs in topological order and moves every message it can, then every
egress endpoint drains. Rounds repeat until the offered batch is in and a round moves nothing. The
same input in the same batches therefore always gives the same output, the same drop counts and
the same failure.

``on_full`` is applied where a writer meets a full lane: ``block`` leaves the message where it is
(the role stops for this round and continues after the readers made room), ``drop_newest`` drops the
new message and counts it on the lane, ``fail`` stops the run with :class:`~byteor.PipelineFailed`
naming the lane. A stage's function runs only once a message can go somewhere (a blocked stage never
re-runs a side effect).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..._errors import PipelineFailed
from ..._stage import DROP, ResolvedStage, StageCall, stage_failure
from ...lanes.journal import JournalReader, JournalSubscription, JournalWriter
from ...lanes.memory import MemoryLane
from ...spec.model import LaneGraphSpecV1
from ._roles import Router, full, journal_lane_dir, oversize
from .plan import LaneGraphPlan, LanePlan, RolePlan
from .state import lane_state_entry, new_state, role_state_entry

__all__ = ["SpGraph"]


class _Lane(Protocol):
    name: str
    kind: str
    capacity: int
    slot_bytes: int
    write_pos: int
    reads: list[int]
    drops: int

    def has_room(self) -> bool: ...
    def push(self, data: bytes) -> None: ...
    def available(self, cell: int) -> int: ...
    def peek(self, cell: int) -> bytes: ...
    def pop(self, cell: int) -> bytes: ...
    def fill(self) -> int: ...


class _JournalLane:
    """A journal lane in the SP runner: appends go to disk; each reader cell is a subscription that
    starts where the journal ended when the run began (older records belong to earlier runs)."""

    def __init__(self, plan: LanePlan, directory: str, fsync: str, spec_hash: str | None = None) -> None:
        self.name = plan.name
        self.kind = "journal"
        self.capacity = 0
        self.slot_bytes = plan.slot_bytes
        self.drops = 0
        self.writer = JournalWriter(directory, segment_bytes=plan.segment_bytes, slot_bytes=plan.slot_bytes,
                                    fsync=fsync, spec_hash=spec_hash)
        self.directory = directory
        start = self.writer.next_index
        self.start = start
        self.write_pos = start
        reader = JournalReader(directory)
        self._subs: list[JournalSubscription] = [reader.subscribe(start) for _ in range(plan.cells)]
        self._pending: list[deque[bytes]] = [deque() for _ in range(plan.cells)]
        self.reads = [start] * plan.cells

    def has_room(self) -> bool:
        return True

    def push(self, data: bytes) -> None:
        self.writer.append(data)
        self.write_pos += 1

    def available(self, cell: int) -> int:
        pending = self._pending[cell]
        if not pending:
            pending.extend(self._subs[cell].poll(4096))
        return len(pending)

    def peek(self, cell: int) -> bytes:
        return self._pending[cell][0]

    def pop(self, cell: int) -> bytes:
        self.reads[cell] += 1
        return self._pending[cell].popleft()

    def fill(self) -> int:
        return self.write_pos - min(self.reads) if self.reads else 0

    def close(self) -> None:
        for sub in self._subs:
            sub.close()
        self.writer.close()


def _offer(lane: _Lane, policy: str, msg: bytes) -> bool:
    """Put ``msg`` into ``lane`` under its on_full policy; False means blocked (message not taken)."""
    if len(msg) > lane.slot_bytes:
        raise oversize(lane.name, len(msg), lane.slot_bytes)
    if lane.has_room():
        lane.push(msg)
        return True
    if policy == "drop_newest":
        lane.drops += 1
        return True
    if policy == "fail":
        raise full(lane.name)
    return False


def _can_take(lane: _Lane, policy: str) -> bool:
    return policy != "block" or lane.has_room()


class _Role:
    def __init__(self, plan: RolePlan, lanes: dict[str, _Lane], policies: dict[str, str],
                 stage: ResolvedStage | None) -> None:
        self.plan = plan
        self.inputs = [(lanes[ref.lane], ref.cell) for ref in plan.inputs]
        self.outputs = [lanes[name] for name in plan.outputs]
        self.policies = [policies[name] for name in plan.outputs]
        self.stage = stage
        self.router = Router(plan.role, len(self.outputs)) if plan.kind == "router" else None
        self.messages_in = 0
        self.messages_out = 0
        self.filtered = 0
        self._next_input = 0
        size = max([lane.slot_bytes for lane, _ in self.inputs] + [lane.slot_bytes for lane in self.outputs])
        self._scratch = bytearray(size)
        self._view = memoryview(self._scratch)
        self._ro_view = self._view.toreadonly()
        self._call = StageCall(stage, size) if stage is not None else None

    def _apply(self, msg: bytes) -> bytes | None:
        call = self._call
        if call is None:
            return msg
        n = len(msg)
        self._scratch[:n] = msg
        try:
            result = call.call(self._view if call.writes else self._ro_view, n)
        except Exception as exc:
            failure = stage_failure(f"stage role {self.plan.name!r}", self.messages_in - 1, exc)
            if failure is exc:
                raise
            raise failure from exc
        if result == DROP:
            self.filtered += 1
            return None
        return bytes(self._view[:result])

    def step(self) -> bool:
        kind = self.plan.kind
        if kind == "merge":
            return self._step_merge()
        lane, cell = self.inputs[0]
        moved = False
        while lane.available(cell):
            target = self.router.choose(lane.peek(cell)) if self.router is not None else 0
            out, policy = self.outputs[target], self.policies[target]
            if not _can_take(out, policy):
                break
            msg = lane.pop(cell)
            self.messages_in += 1
            moved = True
            result = self._apply(msg)
            if result is None:
                continue
            if out.has_room():
                self.messages_out += 1
            _offer(out, policy, result)
            if self.router is not None:
                self.router.delivered()
        return moved

    def _step_merge(self) -> bool:
        out, policy = self.outputs[0], self.policies[0]
        n = len(self.inputs)
        moved = False
        idle = 0
        while idle < n:
            lane, cell = self.inputs[self._next_input]
            self._next_input = (self._next_input + 1) % n
            if not lane.available(cell):
                idle += 1
                continue
            if not _can_take(out, policy):
                # stay fair: the input whose turn it was goes first next round
                self._next_input = (self._next_input - 1) % n
                break
            idle = 0
            msg = lane.pop(cell)
            self.messages_in += 1
            moved = True
            if out.has_room():
                self.messages_out += 1
            _offer(out, policy, msg)
        return moved


class _MemoryJournal:
    """A journal lane kept in memory (replay: nothing is appended to any journal on disk)."""

    def __init__(self, plan: LanePlan) -> None:
        self.name = plan.name
        self.kind = "journal"
        self.capacity = 0
        self.slot_bytes = plan.slot_bytes
        self.drops = 0
        self.write_pos = 0
        self.reads = [0] * plan.cells
        self._pending: list[deque[bytes]] = [deque() for _ in range(plan.cells)]

    def has_room(self) -> bool:
        return True

    def push(self, data: bytes) -> None:
        self.write_pos += 1
        for pending in self._pending:
            pending.append(data)

    def available(self, cell: int) -> int:
        return len(self._pending[cell])

    def peek(self, cell: int) -> bytes:
        return self._pending[cell][0]

    def pop(self, cell: int) -> bytes:
        self.reads[cell] += 1
        return self._pending[cell].popleft()

    def fill(self) -> int:
        return self.write_pos - min(self.reads) if self.reads else 0


class SpGraph:
    """The single-process LaneGraph engine (see the module docstring): the run session offers
    batches per ingress endpoint; every batch is moved through the graph before :meth:`offer`
    returns, so everything offered has left egress (``deliver(endpoint, 0, batch)``) or was
    dropped on purpose by then.

    ``memory_journals`` keeps journal lanes in memory (replay appends nothing to disk).
    ``deliver`` is called from the caller's thread.
    """

    preferred_batch = 1024

    def __init__(self, spec: LaneGraphSpecV1, plan: LaneGraphPlan, stages: dict[str, ResolvedStage], *,
                 deliver: Callable[[str, int, list[bytes]], None], journal_dir: str, fsync: str,
                 spec_hash: str, lane_path: str | None, memory_journals: bool = False) -> None:
        self.spec = spec
        self.plan = plan
        self.spec_hash = spec_hash
        self.lane_path = lane_path
        self.journal_dir = journal_dir
        self._deliver = deliver
        self.lanes: dict[str, _Lane] = {}
        self.policies = {name: lane.on_full for name, lane in plan.lanes.items()}
        self._journals: list[_JournalLane] = []
        try:
            for name, lp in plan.lanes.items():
                if lp.kind == "journal" and memory_journals:
                    self.lanes[name] = _MemoryJournal(lp)
                elif lp.kind == "journal":
                    jl = _JournalLane(lp, str(journal_lane_dir(journal_dir, name)), fsync, spec_hash)
                    self._journals.append(jl)
                    self.lanes[name] = jl
                else:
                    self.lanes[name] = MemoryLane(name, lp.kind, lp.capacity, lp.slot_bytes, lp.cells)
        except BaseException:
            self.abort()
            raise
        self.roles = [_Role(rp, self.lanes, self.policies, stages.get(rp.name)) for rp in plan.roles]
        self.ingress = tuple(ep for ep, _lane in plan.ingress)
        self._ingress_lanes = [lane for _ep, lane in plan.ingress]
        self._egress = [(ref.who.split(":", 1)[1], self.lanes[ref.lane], ref.cell) for ref in plan.egress]
        self.messages_in = 0
        self.messages_out = 0
        self._offered = [0] * len(self.ingress)
        self._failed: _Role | None = None
        self._failure: BaseException | None = None

    # -- the engine interface ---------------------------------------------------------------------

    def start(self) -> None:
        return None

    def offer(self, endpoint: int, items: Sequence[bytes], timeout: float = 0.0) -> int:
        """Take every item into the lane of ingress ``endpoint`` and move the graph until it is
        quiet. Returns ``len(items)``."""
        self.offer_lane(self._ingress_lanes[endpoint], items)
        self._offered[endpoint] += len(items)
        return len(items)

    def offer_lane(self, lane_name: str, items: Sequence[bytes]) -> None:
        """Feed ``items`` into any lane (replay enters at a journal lane) and run to quiet.

        Scheduling is a fixed round: up to one lane's capacity of the items is offered, then every
        role runs in topological order and moves what it can, then every egress drains."""
        lane, policy = self.lanes[lane_name], self.policies[lane_name]
        batch = lane.capacity or 1024
        i = 0
        n = len(items)
        while i < n:
            offered = 0
            while i < n and offered < batch:
                msg = items[i]
                if not _offer(lane, policy, msg if isinstance(msg, bytes) else bytes(msg)):
                    break
                i += 1
                offered += 1
                self.messages_in += 1
            moved = self._round()
            if self._failure is not None:
                break
            if not offered and not moved:  # pragma: no cover - a validated DAG always drains
                raise PipelineFailed(f"LaneGraph {self.spec.name!r} stalled: lane {lane_name!r} never drains")
        while self._round():
            pass
        if self._failure is not None:
            raise self._failure

    def _round(self) -> bool:
        moved = False
        for role in self.roles:
            if role is self._failed:
                continue
            try:
                moved = role.step() or moved
            except Exception as exc:  # finish what is already past it, then raise (_raise_failure)
                self._failed, self._failure = role, exc
                moved = True
        for endpoint, lane, cell in self._egress:
            n = lane.available(cell)
            if n:
                batch = [lane.pop(cell) for _ in range(n)]
                self.messages_out += n
                self._deliver(endpoint, 0, batch)
                moved = True
        return moved

    def mark(self) -> tuple[int, ...]:
        return tuple(self._offered)

    def progress(self) -> tuple[int, ...]:
        return tuple(self._offered)

    def tick(self) -> None:
        return None

    def drain(self) -> None:
        while self._round():
            pass

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        journals, self._journals = self._journals, []
        for jl in journals:
            jl.close()

    @property
    def dropped(self) -> int:
        """Messages dropped on purpose: by a lane under ``on_full=drop_newest``, or by a stage."""
        return sum(lane.drops for lane in self.lanes.values()) + sum(role.filtered for role in self.roles)

    def drops(self) -> dict[str, int]:
        return {name: lane.drops for name, lane in self.lanes.items()}

    def fill(self) -> float | None:
        return None

    def restarts(self) -> dict[str, int]:
        return {}

    def state(self) -> dict[str, Any]:
        state = new_state(self.spec.name, self.spec_hash, runner="sp", lane_path=self.lane_path,
                          journal_dir=self.journal_dir)
        for name, lp in self.plan.lanes.items():
            lane = self.lanes[name]
            path = lane.directory if isinstance(lane, _JournalLane) else None
            state["lanes"].append(lane_state_entry(
                name=name, kind=lp.kind, capacity=lp.capacity, slot_bytes=lp.slot_bytes, on_full=lp.on_full,
                write_pos=lane.write_pos, read_pos=list(lane.reads), drops=lane.drops, path=path,
            ))
        for role in self.roles:
            state["roles"].append(role_state_entry(
                name=role.plan.name, kind=role.plan.kind, pid=None, alive=False,
                messages_in=role.messages_in, messages_out=role.messages_out, restarts=0,
            ))
        state["taken_unix_ms"] = int(time.time() * 1000)
        return state
