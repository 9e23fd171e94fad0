"""``lane_graph_state.json``: the observable state of a LaneGraph (writer, reader, text renderer).

Version field ``state_v`` (``byteor._schemas.SCHEMA_VERSIONS["lane_graph_state"]``); a newer major
is refused with :class:`~byteor.ArtifactError`. Fields::

    state_v, name, spec_hash, runner ("sp" | "mp"), lane_path, journal_dir, taken_unix_ms,
    lanes: [{name, kind, path, capacity, slot_bytes, on_full, write_pos, read_pos: [per reader cell],
             fill, drops, repaired}],
    roles: [{name, kind, pid, alive, messages_in, messages_out, restarts}]

``fill`` is ``write_pos - min(read_pos)`` (journal lanes: records not yet read by the slowest
reader; capacity 0 means unbounded). ``repaired`` (``mpsc`` lanes of the multi-process runner, 0
elsewhere; absent in files of earlier byteor versions): slots published as dropped because the
writer that claimed them died before publishing them. ``pid`` is null for the single-process runner.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..._errors import ArtifactError
from ..._json import check_version, read_json_object, require, write_json
from ..._schemas import SCHEMA_VERSIONS

__all__ = [
    "STATE_FILE",
    "lane_state_entry",
    "new_state",
    "read_state",
    "render_state",
    "role_state_entry",
    "write_state",
]

STATE_FILE = "lane_graph_state.json"
_ARTIFACT = "lane_graph_state"


def new_state(name: str, spec_hash: str, *, runner: str, lane_path: str | None,
              journal_dir: str | None) -> dict[str, Any]:
    return {
        "state_v": SCHEMA_VERSIONS[_ARTIFACT],
        "name": name,
        "spec_hash": spec_hash,
        "runner": runner,
        "lane_path": lane_path,
        "journal_dir": journal_dir,
        "taken_unix_ms": 0,
        "lanes": [],
        "roles": [],
    }


def lane_state_entry(*, name: str, kind: str, capacity: int, slot_bytes: int, on_full: str, write_pos: int,
                     read_pos: list[int], drops: int, path: str | None, repaired: int = 0) -> dict[str, Any]:
    fill = write_pos - min(read_pos) if read_pos else 0
    return {
        "name": name, "kind": kind, "path": path, "capacity": capacity, "slot_bytes": slot_bytes,
        "on_full": on_full, "write_pos": write_pos, "read_pos": read_pos, "fill": max(0, fill),
        "drops": drops, "repaired": repaired,
    }


def role_state_entry(*, name: str, kind: str, pid: int | None, alive: bool, messages_in: int,
                     messages_out: int, restarts: int) -> dict[str, Any]:
    return {
        "name": name, "kind": kind, "pid": pid, "alive": alive, "messages_in": messages_in,
        "messages_out": messages_out, "restarts": restarts,
    }


def write_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write atomically (readers, e.g. ``snapshot`` while the graph runs, never see half a file)."""
    write_json(path, state)


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a state file; missing or mistyped fields and newer majors raise ArtifactError."""
    p = os.fspath(path)
    if Path(p).is_dir():
        p = os.path.join(p, STATE_FILE)
    obj = read_json_object(p, artifact=_ARTIFACT)
    check_version(obj, artifact=_ARTIFACT, field="state_v", path=p, required=True)
    require(obj, "name", str, path=p)
    require(obj, "spec_hash", str, path=p)
    require(obj, "runner", str, path=p)
    require(obj, "lane_path", str, path=p, nullable=True)
    require(obj, "journal_dir", str, path=p, nullable=True)
    require(obj, "taken_unix_ms", int, path=p)
    for i, lane in enumerate(require(obj, "lanes", list, path=p)):
        where = f"{p} lanes.{i}"
        if not isinstance(lane, dict):
            raise ArtifactError(f"{where}: must be an object")
        lane_fields: tuple[tuple[str, type], ...] = (
            ("name", str), ("kind", str), ("capacity", int), ("slot_bytes", int), ("on_full", str),
            ("write_pos", int), ("read_pos", list), ("fill", int), ("drops", int),
        )
        for key, typ in lane_fields:
            require(lane, key, typ, path=where)
        require(lane, "path", str, path=where, nullable=True)
        if "repaired" in lane:
            require(lane, "repaired", int, path=where)
    for i, role in enumerate(require(obj, "roles", list, path=p)):
        where = f"{p} roles.{i}"
        if not isinstance(role, dict):
            raise ArtifactError(f"{where}: must be an object")
        role_fields: tuple[tuple[str, type], ...] = (
            ("name", str), ("kind", str), ("alive", bool), ("messages_in", int), ("messages_out", int),
            ("restarts", int),
        )
        for key, typ in role_fields:
            require(role, key, typ, path=where)
        require(role, "pid", int, path=where, nullable=True)
    return obj


def render_state(state: dict[str, Any]) -> list[Any]:
    """Rich renderables (two tables: lanes, roles) for the text output of ``snapshot``."""
    from rich.table import Table

    lanes = Table(title=f"LaneGraph {state['name']} ({state['runner']}) lanes")
    for col in ("lane", "kind", "capacity", "write", "read (per reader)", "fill", "drops", "on_full"):
        lanes.add_column(col, justify="right" if col in ("capacity", "write", "fill", "drops") else "left")
    for lane in state["lanes"]:
        lanes.add_row(
            lane["name"], lane["kind"], str(lane["capacity"] or "disk"), str(lane["write_pos"]),
            ", ".join(str(r) for r in lane["read_pos"]), str(lane["fill"]), str(lane["drops"]),
            lane["on_full"],
        )
    roles = Table(title="roles")
    for col in ("role", "kind", "pid", "alive", "in", "out", "restarts"):
        roles.add_column(col)
    for role in state["roles"]:
        roles.add_row(
            role["name"], role["kind"], "-" if role["pid"] is None else str(role["pid"]),
            "yes" if role["alive"] else "no", str(role["messages_in"]), str(role["messages_out"]),
            str(role["restarts"]),
        )
    return [lanes, roles]
