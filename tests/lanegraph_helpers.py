"""Shared helpers for the LaneGraph tests: build specs from a compact description, run them."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from byteor.runtime.lanegraph import LaneGraphResult, run_lanegraph
from byteor.spec.kv import decode_kv
from byteor.spec.model import LaneGraphSpecV1


def lanegraph_kv(name: str, lanes: list[dict[str, Any]], endpoints: list[tuple[str, str, str]],
                 roles: list[dict[str, Any]], on_full: str | None = None) -> str:
    """KV text of a LaneGraph: lanes as dicts of lane keys, endpoints (name, direction, lane), roles
    as dicts with ``inputs``/``outputs`` lists plus role keys."""
    lines = [f"pipeline.name={name}", "pipeline.target=LaneGraph"]
    if on_full:
        lines.append(f"pipeline.on_full={on_full}")
    for i, lane in enumerate(lanes):
        for key, value in lane.items():
            lines.append(f"pipeline.lanes.{i}.{key}={value}")
    for i, (ep, direction, lane_name) in enumerate(endpoints):
        lines += [f"pipeline.endpoints.{i}.name={ep}", f"pipeline.endpoints.{i}.direction={direction}",
                  f"pipeline.endpoints.{i}.lane={lane_name}"]
    for i, role in enumerate(roles):
        for key, value in role.items():
            if key in ("inputs", "outputs"):
                for k, v in enumerate(value):
                    lines.append(f"pipeline.roles.{i}.{key}.{k}={v}")
            else:
                lines.append(f"pipeline.roles.{i}.{key}={value}")
    return "\n".join(lines) + "\n"


def lanegraph(*args: Any, **kw: Any) -> LaneGraphSpecV1:
    spec = decode_kv(lanegraph_kv(*args, **kw))
    assert isinstance(spec, LaneGraphSpecV1)
    return spec


def run(spec: LaneGraphSpecV1, runner: str, inputs: Iterable[bytes], tmp: Path,
        **kw: Any) -> tuple[dict[str, list[bytes]], LaneGraphResult]:
    """Run ``spec`` with ``runner`` ("sp" or "mp"); returns (outputs by egress endpoint, result)."""
    got: dict[str, list[bytes]] = defaultdict(list)
    kw.setdefault("journal_dir", str(tmp / "journal"))
    if runner == "mp":
        kw.setdefault("lane_path", str(tmp / "lanes"))
        kw.setdefault("wait", "block")
    result = run_lanegraph(spec, sp=runner == "sp", inputs=inputs,
                           outputs=lambda ep, msg: got[ep].append(bytes(msg)), **kw)
    return dict(got), result


def hang(slot: memoryview, length: int) -> int:
    """A stage that never finishes (a stuck consumer, for backpressure tests)."""
    time.sleep(3600)
    return length


hang.byteor_modifies = False  # type: ignore[attr-defined]  # the registry reads this marker


def drop_odd(slot: memoryview, length: int) -> int:
    """Drops messages whose first byte is odd; keeps the others unchanged."""
    return -1 if length and slot[0] & 1 else length


drop_odd.byteor_modifies = False  # type: ignore[attr-defined]  # the registry reads this marker


def shout(slot: memoryview, length: int) -> int:
    """Appends one ``!`` to the message (the stage may grow it up to the slot size)."""
    slot[length] = 0x21
    return length + 1


def hang_once(slot: memoryview, length: int) -> int:
    """Hangs on its first message in the first process that runs it (marker file: $LG_HANG_MARKER),
    then behaves as identity: a stuck role the supervisor must notice and restart."""
    import os

    marker = os.environ["LG_HANG_MARKER"]
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(3600)
    return length


hang_once.byteor_modifies = False  # type: ignore[attr-defined]  # the registry reads this marker
