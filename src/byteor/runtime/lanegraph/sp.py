"""The single-process LaneGraph runner (``run --sp``): every role in one thread, deterministically.

Scheduling is a fixed round: the ingress endpoint offers up to one lane's capacity of input
messages, then every role runs in topological order and moves every message it can, then every
egress endpoint drains. Rounds repeat until the input is exhausted and a round moves nothing. The
same input therefore always gives the same output, the same drop counts and the same failure.

``on_full`` is applied where a writer meets a full lane: ``block`` leaves the message where it is
(the role stops for this round and continues after the readers made room), ``drop_newest`` drops the
new message and counts it on the lane, ``fail`` stops the run with :class:`~byteor.PipelineFailed`
naming the lane. A stage's function runs only once a message can go somewhere (a blocked stage never
re-runs a side effect).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ..._errors import PipelineFailed
from ..._stage import DROP, ResolvedStage, StageContext
from ...lanes.journal import JournalReader, JournalSubscription, JournalWriter
from ...lanes.memory import MemoryLane
from ...spec.model import LaneGraphSpecV1
from ._roles import (
    LaneGraphResult,
    Router,
    full,
    journal_lane_dir,
    oversize,
    resolve_role_stage,
    role_index,
)
from .plan import LaneGraphPlan, LanePlan, RolePlan
from .state import lane_state_entry, new_state, role_state_entry

__all__ = ["run_sp"]


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
        self._next_input = 0
        size = max([lane.slot_bytes for lane, _ in self.inputs] + [lane.slot_bytes for lane in self.outputs])
        self._scratch = bytearray(size)
        self._view = memoryview(self._scratch)

    def _apply(self, msg: bytes) -> bytes | None:
        if self.stage is None:
            return msg
        n = len(msg)
        self._scratch[:n] = msg
        result = self.stage.fn(self._view, n)
        if result == DROP:
            return None
        if not 0 <= result <= len(self._scratch):
            raise PipelineFailed(f"stage role {self.plan.name!r} returned an invalid length {result}")
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


def run_sp(
    spec: LaneGraphSpecV1,
    plan: LaneGraphPlan,
    *,
    inputs: Iterable[bytes],
    outputs: Callable[[str, bytes], None],
    context: StageContext,
    journal_dir: str,
    fsync: str,
    spec_hash: str,
    lane_path: str | None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> LaneGraphResult:
    """Run ``plan`` in this thread (see the module docstring); returns the result with final state."""
    stages: dict[str, ResolvedStage] = {}
    try:
        for role in plan.roles:
            if role.kind == "stage":
                stages[role.name] = resolve_role_stage(role_index(spec, role), role.role, context)
        return _run(spec, plan, stages, inputs=inputs, outputs=outputs, journal_dir=journal_dir, fsync=fsync,
                    spec_hash=spec_hash, lane_path=lane_path, progress=progress)
    finally:
        for stage in stages.values():
            if stage.close is not None:
                stage.close()


def _run(
    spec: LaneGraphSpecV1,
    plan: LaneGraphPlan,
    stages: dict[str, ResolvedStage],
    *,
    inputs: Iterable[bytes],
    outputs: Callable[[str, bytes], None],
    journal_dir: str,
    fsync: str,
    spec_hash: str,
    lane_path: str | None,
    progress: Callable[[dict[str, Any]], None] | None,
) -> LaneGraphResult:
    lanes: dict[str, _Lane] = {}
    policies = {name: lane.on_full for name, lane in plan.lanes.items()}
    journals: list[_JournalLane] = []
    try:
        for name, lp in plan.lanes.items():
            if lp.kind == "journal":
                jl = _JournalLane(lp, str(journal_lane_dir(journal_dir, name)), fsync, spec_hash)
                journals.append(jl)
                lanes[name] = jl
            else:
                lanes[name] = MemoryLane(name, lp.kind, lp.capacity, lp.slot_bytes, lp.cells)
        roles = [_Role(rp, lanes, policies, stages.get(rp.name)) for rp in plan.roles]
        ingress_name, ingress_lane = plan.ingress[0]
        in_lane, in_policy = lanes[ingress_lane], policies[ingress_lane]
        batch = in_lane.capacity or 1024
        egress = [(ref.who.split(":", 1)[1], lanes[ref.lane], ref.cell) for ref in plan.egress]
        source: Iterator[bytes] = iter(inputs)
        pending: bytes | None = None
        exhausted = False
        result = LaneGraphResult()
        rounds = 0
        while True:
            moved = False
            offered = 0
            while not exhausted and offered < batch:
                if pending is None:
                    try:
                        pending = bytes(next(source))
                    except StopIteration:
                        exhausted = True
                        break
                    result.messages_in += 1
                if not _offer(in_lane, in_policy, pending):
                    break
                pending = None
                offered += 1
                moved = True
            for role in roles:
                moved = role.step() or moved
            for endpoint, lane, cell in egress:
                while lane.available(cell):
                    outputs(endpoint, lane.pop(cell))
                    result.messages_out += 1
                    moved = True
            rounds += 1
            if progress is not None and rounds % 64 == 0:
                progress({"messages_in": result.messages_in, "messages_out": result.messages_out})
            if exhausted and pending is None and not moved:
                break
            if not moved and pending is not None:  # pragma: no cover - a DAG whose egress drains moves
                raise PipelineFailed(f"LaneGraph {spec.name!r} stalled: lane {ingress_name!r} never drains")
        result.drops = {name: lane.drops for name, lane in lanes.items()}
        result.state = _state(spec, plan, lanes, roles, spec_hash=spec_hash, lane_path=lane_path,
                              journal_dir=journal_dir)
        return result
    finally:
        for jl in journals:
            jl.close()


def _state(spec: LaneGraphSpecV1, plan: LaneGraphPlan, lanes: dict[str, _Lane], roles: list[_Role], *,
           spec_hash: str, lane_path: str | None, journal_dir: str) -> dict[str, Any]:
    state = new_state(spec.name, spec_hash, runner="sp", lane_path=lane_path, journal_dir=journal_dir)
    for name, lp in plan.lanes.items():
        lane = lanes[name]
        path = lane.directory if isinstance(lane, _JournalLane) else None
        state["lanes"].append(lane_state_entry(
            name=name, kind=lp.kind, capacity=lp.capacity, slot_bytes=lp.slot_bytes, on_full=lp.on_full,
            write_pos=lane.write_pos, read_pos=list(lane.reads), drops=lane.drops, path=path,
        ))
    for role in roles:
        state["roles"].append(role_state_entry(
            name=role.plan.name, kind=role.plan.kind, pid=None, alive=False,
            messages_in=role.messages_in, messages_out=role.messages_out, restarts=0,
        ))
    state["taken_unix_ms"] = int(time.time() * 1000)
    return state
