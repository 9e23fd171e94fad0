"""What a running pipeline looks like from outside: one observation built from its files.

An :class:`Observer` is given a ring directory, a lane directory or one ring file, and reads, never
writes and never waits on:

* ``session_state.json`` (identity, edges, policy decisions; refreshed about once a second),
* ``counters.bin`` (:mod:`byteor.obs.counters`: messages in/out/dropped, per-process state, pid,
  restarts, action and DataGuard counts; updated in place),
* the ring headers (cursor, gating cells, participants), attached once and kept,
* ``lane_graph_state.json`` and the journal directories of a LaneGraph,
* ``runtime_config.txt`` (the effective tuning).

Any of them may be missing (a bare ring of a benchmark has only its ring file): the observation
then lacks that part. Every string taken from a file is masked (:func:`byteor.obs.mask`). The same
observation feeds the Prometheus endpoint (:mod:`byteor.obs.metrics`), ``/readyz``, ``byteor top`` and
the console (:mod:`byteor.console`).

Shape (``observe_v`` 1)::

    observe_v, path, taken_unix_ms, pipeline, spec_hash, target, executor, alive,
    session: session_state | null, messages_in, messages_out, dropped,
    rings: [single_ring_snapshot objects] (SingleRing), lanes / roles (lane_graph_state, LaneGraph),
    stages: [{stage, shard, kind, state, pid, restarts, processed, lag, up, inputs (roles)}],
    participants: [{shard, role (producer, egress, a stage id), pid, alive, heartbeat_age_ms}],
    counters: [counters rows], journals: [{lane, path, bytes, segments, records}],
    actions: [{stage, shard, performed, failed, dead_lettered, dry_run}],
    dataguard: [{stage, shard, <report counter>: n, ...}],
    policy: [{stage, key, decision}], adapters: [{endpoint, direction, name, connected, position, lag}],
    tuning: {role: [knob states]} | null, ready, not_ready: [reasons]
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from .._errors import ArtifactError, ShmError, UsageError
from ..obs import counters as ctr
from ..obs.redact import mask_value
from ..shm import RingSnapshot, attach_ring, pid_alive, take_snapshot
from ._stage_main import ROLE_STAGE_BASE
from .lanegraph.state import STATE_FILE, read_state
from .session_state import SESSION_STATE_FILE, read_session_state

__all__ = ["OBSERVE_VERSION", "Observer", "find_pipeline", "pipeline_dirs", "rates"]

OBSERVE_VERSION = 1
#: Where runs keep their files unless told otherwise (SingleRing rings and LaneGraph lanes alike).
SHM_ROOT = "/dev/shm/byteor"


def pipeline_dirs(root: str = SHM_ROOT) -> list[str]:
    """Directories under ``root`` holding a running session's ``session_state.json``."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n, SESSION_STATE_FILE))]


def find_pipeline(name_or_path: str, root: str = SHM_ROOT) -> str:
    """A pipeline's directory (or ring file) from a path, or from its name when exactly one running
    session under ``root`` has that name. :class:`~byteor.UsageError` (exit 2) otherwise."""
    if os.path.exists(name_or_path):
        return name_or_path
    if os.sep in name_or_path:
        raise UsageError(f"{name_or_path} does not exist (is the pipeline running?)")
    found = []
    for d in pipeline_dirs(root):
        try:
            state = read_session_state(d)
        except ArtifactError:
            continue
        if state is not None and state.get("name") == name_or_path:
            found.append(d)
    if not found:
        raise UsageError(f"no running pipeline named {name_or_path!r} under {root} (pass its ring or lane "
                         "directory when it runs elsewhere)")
    if len(found) > 1:
        raise UsageError(f"{len(found)} running pipelines are named {name_or_path!r}: {', '.join(found)}; "
                         "pass one of these paths")
    return found[0]


def rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Messages per second between two observations: in, out, and per stage processed."""
    dt = max((after["taken_unix_ms"] - before["taken_unix_ms"]) / 1000.0, 1e-3)

    def per_s(a: Any, b: Any) -> float | None:
        if not isinstance(a, int) or not isinstance(b, int):
            return None
        return float(round(max(0, b - a) / dt, 1))

    earlier = {(s["stage"], s["shard"]): s["processed"] for s in before["stages"]}
    return {
        "interval_s": round(dt, 3),
        "messages_in_per_s": per_s(before.get("messages_in"), after.get("messages_in")),
        "messages_out_per_s": per_s(before.get("messages_out"), after.get("messages_out")),
        "stages": [{"stage": s["stage"], "shard": s["shard"],
                    "processed_per_s": per_s(earlier.get((s["stage"], s["shard"])), s["processed"])}
                   for s in after["stages"]],
    }


class Observer:
    """Reads one pipeline's files on demand (:meth:`observe`); keeps what it attached until
    :meth:`close`, re-attaching a file a new run replaced."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.directory = self.path if os.path.isdir(self.path) else os.path.dirname(self.path)
        self._rings: dict[str, tuple[int, Any]] = {}
        self._counters: ctr.CountersFile | None = None
        self._plan: tuple[int, Any] | None = None

    # -- files ------------------------------------------------------------------------------------

    def _ring_files(self) -> list[str]:
        if not os.path.isdir(self.path):
            return [self.path] if self.path.endswith(".ring") else []
        files = [f for f in os.listdir(self.path) if f.endswith(".ring")]
        return [os.path.join(self.path, f) for f in sorted(files, key=_shard_order)]

    def _ring(self, path: str) -> Any | None:
        try:
            ino = os.stat(path).st_ino
        except OSError:
            return None
        held = self._rings.get(path)
        if held is not None and held[0] == ino:
            return held[1]
        if held is not None:
            with contextlib.suppress(Exception):
                held[1].close()
        try:
            ring = attach_ring(path)
        except ShmError:
            self._rings.pop(path, None)
            return None
        self._rings[path] = (ino, ring)
        return ring

    def _counter_rows(self) -> list[dict[str, Any]]:
        path = ctr.counters_path(self.directory)
        try:
            ino = os.stat(path).st_ino
        except OSError:
            return []
        if self._counters is None or self._counters.inode != ino:
            if self._counters is not None:
                self._counters.close()
                self._counters = None
            try:
                self._counters = ctr.CountersFile.open(path)
            except (OSError, ValueError):
                return []
        return self._counters.rows()

    def _role_inputs(self) -> dict[str, list[tuple[str, int]]]:
        """role -> [(lane, reader cell)], planned from the spec.kv a LaneGraph keeps in its lane path."""
        path = os.path.join(self.directory, "spec.kv")
        try:
            ino = os.stat(path).st_ino
        except OSError:
            return {}
        if self._plan is None or self._plan[0] != ino:
            from ..spec.kv import decode_kv
            from ..spec.model import LaneGraphSpecV1
            from .lanegraph.plan import plan_lanegraph

            try:
                with open(path, "rb") as fh:
                    spec = decode_kv(fh.read())
                plan = plan_lanegraph(spec) if isinstance(spec, LaneGraphSpecV1) else None
            except Exception:  # a spec being replaced: no role inputs this time
                return {}
            inputs = {rp.name: [(ref.lane, ref.cell) for ref in rp.inputs] for rp in plan.roles} if plan else {}
            self._plan = (ino, inputs)
        return dict(self._plan[1])

    def close(self) -> None:
        for _ino, ring in self._rings.values():
            with contextlib.suppress(Exception):
                ring.close()
        self._rings.clear()
        if self._counters is not None:
            self._counters.close()
            self._counters = None

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the observation --------------------------------------------------------------------------

    def session(self) -> dict[str, Any] | None:
        """``session_state.json`` (masked), or None."""
        try:
            state = read_session_state(self.directory)
        except ArtifactError:
            return None
        return mask_value(state) if state is not None else None

    def snapshots(self) -> list[RingSnapshot]:
        """Ring snapshots (SingleRing rings; for a lane directory, its lane rings)."""
        out = []
        for path in self._ring_files():
            ring = self._ring(path)
            if ring is None:
                continue
            with contextlib.suppress(Exception):  # a ring unmapped under us at the end of a run
                out.append(take_snapshot(ring))
        return out

    def lane_state(self) -> dict[str, Any] | None:
        path = os.path.join(self.directory, STATE_FILE)
        if not os.path.isfile(path):
            return None
        try:
            state: dict[str, Any] = mask_value(read_state(path))
        except ArtifactError:
            return None
        return state

    def tuning(self) -> dict[str, list[dict[str, str]]] | None:
        from ._tuning import read_tuning

        try:
            return read_tuning(self.directory)
        except UsageError:
            return None

    def observe(self) -> dict[str, Any]:
        """One observation (module docstring)."""
        session = self.session()
        rows = self._counter_rows()
        lane_state = self.lane_state()
        target = session["target"] if session else ("LaneGraph" if lane_state else "SingleRing")
        obs: dict[str, Any] = {
            "observe_v": OBSERVE_VERSION, "path": self.path, "taken_unix_ms": time.time_ns() // 1_000_000,
            "pipeline": session["name"] if session else (lane_state or {}).get("name")
            or os.path.basename(self.directory),
            "spec_hash": session["spec_hash"] if session else (lane_state or {}).get("spec_hash"),
            "target": target, "executor": session["executor"] if session else None,
            "alive": session is not None and pid_alive(int(session["pid"])),
            "session": session,
        }
        rings: list[RingSnapshot] = []
        if target == "LaneGraph":
            obs["lanes"] = lane_state["lanes"] if lane_state else []
            obs["roles"] = lane_state["roles"] if lane_state else []
        else:
            rings = self.snapshots()
            obs["rings"] = [s.to_json() for s in rings]
        session_row = next((r for r in rows if r["kind"] == "session"), None)
        for key in ("messages_in", "messages_out", "dropped"):
            if session_row is not None:
                obs[key] = session_row[key]
            elif session is not None:
                obs[key] = session[key]
            elif rings:
                obs[key] = _ring_totals(rings)[key]
            else:
                obs[key] = None
        obs["stages"] = (self._role_stages(obs, rows) if target == "LaneGraph"
                         else _ring_stages(rings, [r for r in rows if r["kind"] == "stage"]))
        obs["participants"] = _participants(rings, obs["stages"])
        obs["counters"] = mask_value(rows)
        obs["journals"] = _journals(obs.get("lanes", []))
        obs["actions"] = [{"stage": r["name"], "shard": r["shard"], "performed": r["actions_performed"],
                           "failed": r["actions_failed"], "dead_lettered": r["actions_dead_lettered"],
                           "dry_run": r["actions_dry_run"]}
                          for r in obs["counters"] if r["kind"] != "session"
                          and any(r[k] for k in ("actions_performed", "actions_failed", "actions_dry_run"))]
        obs["dataguard"] = [{"stage": r["name"], "shard": r["shard"],
                             **{name: r[f"dataguard_{name}"] for name in ctr.DATAGUARD_COUNTERS}}
                            for r in obs["counters"] if r["kind"] != "session" and r["dataguard_seen"]]
        obs["policy"] = list(session.get("policy", [])) if session else []
        obs["adapters"] = _adapters(session)
        obs["tuning"] = self.tuning()
        reasons = _not_ready(obs)
        obs["ready"] = not reasons
        obs["not_ready"] = reasons
        return obs

    def _role_stages(self, obs: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_name = {r["name"]: r for r in rows if r["kind"] == "role"}
        lanes = {lane["name"]: lane for lane in obs.get("lanes", [])}
        inputs = self._role_inputs()
        out = []
        for role in obs.get("roles", []):
            row = by_name.get(role["name"], {})
            lag = 0
            for lane_name, cell in inputs.get(role["name"], []):
                lane = lanes.get(lane_name)
                if lane is not None and cell < len(lane["read_pos"]):
                    lag += max(0, lane["write_pos"] - lane["read_pos"][cell])
            entry = _stage_entry(role["name"], 0, "role", row, processed=role["messages_in"], lag=lag,
                                 pid=role["pid"], restarts=role["restarts"])
            entry["inputs"] = [lane for lane, _cell in inputs.get(role["name"], [])]
            out.append(entry)
        return out


def _shard_order(name: str) -> tuple[int, str]:
    stem = name.removesuffix(".ring")
    _, _, tail = stem.rpartition("-")
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def _ring_totals(rings: list[RingSnapshot]) -> dict[str, int]:
    return {"messages_in": sum(s.cursor + 1 for s in rings),
            "messages_out": sum(s.egress.gating + 1 for s in rings if s.egress is not None), "dropped": 0}


def _stage_entry(name: str, shard: int, kind: str, row: dict[str, Any], *, processed: int, lag: int,
                 pid: int | None = None, restarts: int | None = None) -> dict[str, Any]:
    state = row.get("state", "unknown")
    return {"stage": name, "shard": shard, "kind": kind, "state": state,
            "pid": row.get("pid") or pid, "restarts": row.get("restarts", restarts or 0),
            "processed": processed, "lag": lag, "up": state == "running"}


def _ring_stages(rings: list[RingSnapshot], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per stage cell of each shard's ring, named and stated from the counters rows."""
    out = []
    for k, snap in enumerate(rings):
        shard_rows = [r for r in rows if r["shard"] == k]
        for cell in snap.stages:
            row = shard_rows[cell.index] if cell.index < len(shard_rows) else {}
            name = row.get("name") or f"stage {cell.index}"
            out.append(_stage_entry(str(name), k, "stage", row, processed=cell.gating + 1, lag=cell.lag))
    return out


def _participants(rings: list[RingSnapshot], stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ring's participants, named: ``producer``, ``egress``, or the stage's id."""
    from .snapshot import role_name

    out = []
    for k, snap in enumerate(rings):
        per_shard = [s["stage"] for s in stages if s["kind"] == "stage" and s["shard"] == k]
        for p in snap.participants:
            name = role_name(p.role)
            index = p.role - ROLE_STAGE_BASE
            if p.role >= ROLE_STAGE_BASE and index < len(per_shard):
                name = per_shard[index]
            out.append({"shard": k, "role": name, "pid": p.pid, "alive": p.alive,
                        "heartbeat_age_ms": p.heartbeat_age_ms})
    return out


def _journals(lanes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from ..lanes.journal import list_segments

    out = []
    for lane in lanes:
        if lane.get("kind") != "journal" or not lane.get("path"):
            continue
        size = 0
        segments = 0
        with contextlib.suppress(OSError):
            for _index, seg in list_segments(lane["path"]):
                with contextlib.suppress(OSError):
                    size += seg.stat().st_size
                    segments += 1
        out.append({"lane": lane["name"], "path": lane["path"], "bytes": size, "segments": segments,
                    "records": lane["write_pos"]})
    return out


def _adapters(session: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Sources and sinks whose ``describe()`` reports a connection, a position or a lag."""
    if not session:
        return []
    out = []
    for direction, key in (("source", "sources"), ("sink", "sinks")):
        for entry in session.get(key, []):
            if not isinstance(entry, dict) or not ({"connected", "position", "lag"} & set(entry)):
                continue
            out.append({"endpoint": str(entry.get("endpoint", "")), "direction": direction,
                        "name": str(entry.get("name", "")), "connected": entry.get("connected"),
                        "position": entry.get("position"), "lag": entry.get("lag")})
    return out


def _not_ready(obs: dict[str, Any]) -> list[str]:
    """Why the pipeline is not ready: no live session, a stage process not running (starting,
    being restarted, exited, failed), an adapter not connected."""
    reasons = []
    if obs["session"] is None:
        reasons.append("no session_state.json: the pipeline is not running (or has not started yet)")
    elif not obs["alive"]:
        reasons.append(f"session process {obs['session']['pid']} is gone")
    for st in obs["stages"]:
        if st["state"] != "running" and st["state"] != "unknown":
            where = f" (shard {st['shard']})" if st["kind"] == "stage" and st["shard"] else ""
            reasons.append(f"{st['kind']} {st['stage']!r}{where} is {st['state']}")
    for ad in obs["adapters"]:
        if ad["connected"] is False:
            reasons.append(f"{ad['direction']} {ad['name']!r} (endpoint {ad['endpoint']!r}) is not connected")
    return reasons
