"""Verb ``top``: a live terminal view of a running pipeline, from another shell.

``byteor top [NAME|PATH]`` finds the pipeline by the name in its ``session_state.json`` (runs under
``/dev/shm/byteor``; with no argument, the only one running there) or by its ring or lane directory,
and redraws every ``--interval`` seconds: messages in/out/dropped and their rates, each stage's
state, processed count, rate, lag bar and restarts, ring or lane fill bars and drops, participants,
adapters, side effects and DataGuard outcomes, and why the pipeline is not ready when it is not.
It reads the same files as ``snapshot`` and the metrics endpoint (never the hot path).

``--once`` prints one frame and exits; ``--once --json`` prints the observation
(:mod:`byteor.runtime.observe`, the same ``rings``/``lanes``/``roles``/``session``/``tuning`` as
``snapshot --json``) with ``rates`` measured over ``--interval`` seconds. Ctrl-C leaves the live view
(exit 0); so does the end of the run. Every string shown is masked (no secret on screen).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from .._errors import UsageError
from ..runtime.observe import SHM_ROOT, Observer, find_pipeline, pipeline_dirs, rates
from ._common import add_json_option, emit_json, stdout_console

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser, verb_name: str) -> None:
    parser.add_argument("target", nargs="?", metavar="NAME|PATH",
                        help=f"a running pipeline's name (runs under {SHM_ROOT}) or its ring/lane directory "
                             "(default: the only pipeline running)")
    parser.add_argument("--once", action="store_true", help="print one frame (or, with --json, one "
                        "observation with rates) and exit")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S",
                        help="seconds between frames, and over which --once measures rates (default 1)")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    if not 0.05 <= args.interval <= 3600:
        raise UsageError(f"--interval must be between 0.05 and 3600 seconds, got {args.interval}")
    if args.json and not args.once:
        raise UsageError("--json prints one observation: use it with --once")
    path = _target(args.target)
    with Observer(path) as observer:
        first = observer.observe()
        if not _running(first):
            raise UsageError(f"{path}: no running pipeline there (no session state and no rings)")
        if args.once:
            time.sleep(args.interval)
            obs = observer.observe()
            obs["rates"] = rates(first, obs)
            if args.json:
                emit_json(obs)
            else:
                stdout_console().print(render(obs, obs["rates"]))
            return 0
        return _live(observer, first, args.interval)


def _target(given: str | None) -> str:
    if given:
        return find_pipeline(given)
    dirs = pipeline_dirs()
    if len(dirs) == 1:
        return dirs[0]
    if not dirs:
        raise UsageError(f"no running pipeline under {SHM_ROOT}; name one or pass its ring or lane directory")
    names = ", ".join(os.path.basename(d) for d in dirs)
    raise UsageError(f"{len(dirs)} pipelines are running ({names}); name one or pass its directory")


def _running(obs: dict[str, Any]) -> bool:
    return obs["session"] is not None or bool(obs.get("rings"))


def _live(observer: Observer, first: dict[str, Any], interval: float) -> int:
    from rich.live import Live

    console = stdout_console()
    prev = first
    try:
        with Live(render(first, rates(first, first)), console=console, auto_refresh=False,
                  screen=False, transient=False) as live:
            while True:
                time.sleep(interval)
                obs = observer.observe()
                if not _running(obs):
                    live.update(_ended(prev), refresh=True)
                    return 0
                live.update(render(obs, rates(prev, obs)), refresh=True)
                prev = obs
    except KeyboardInterrupt:
        return 0


def _ended(last: dict[str, Any]) -> Any:
    from rich.text import Text

    return Text(f"{last['pipeline']}: the run has ended ({last['path']} is gone)")


# ==================================================================================================
# rendering
# ==================================================================================================


def _bar(value: int, total: int, width: int = 20) -> Any:
    from rich.text import Text

    ratio = 0.0 if total <= 0 else min(1.0, max(0.0, value / total))
    full = round(ratio * width)
    style = "green" if ratio < 0.5 else "yellow" if ratio < 0.9 else "red"
    return Text("█" * full, style=style) + Text("░" * (width - full), style="dim") + Text(f" {ratio:4.0%}")


def _num(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "-" if v is None else str(v)


def _rate(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}/s"


def render(obs: dict[str, Any], r: dict[str, Any]) -> Any:
    """One frame: header, stages, rings or lanes, participants, adapters, side effects, DataGuard."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    session = obs["session"] or {}
    parts: list[Any] = []
    head = Text()
    head.append(f"{obs['pipeline']}", style="bold")
    head.append(f"  {(obs['spec_hash'] or '')[:15]}  {obs['target']} {obs['executor'] or ''}")
    if session:
        up = max(0, obs["taken_unix_ms"] - int(session["started_unix_ms"])) // 1000
        head.append(f"  posture {session['posture']}  pid {session['pid']}  up {up // 60}m{up % 60:02d}s")
    head.append("  READY" if obs["ready"] else "  NOT READY", style="green" if obs["ready"] else "red bold")
    parts.append(head)
    parts.append(Text(f"in {_num(obs['messages_in'])} ({_rate(r.get('messages_in_per_s'))})   "
                      f"out {_num(obs['messages_out'])} ({_rate(r.get('messages_out_per_s'))})   "
                      f"dropped {_num(obs['dropped'])}"))
    for reason in obs["not_ready"]:
        parts.append(Text(f"not ready: {reason}", style="red"))

    capacity = _capacities(obs)
    stage_rates = {(s["stage"], s["shard"]): s["processed_per_s"] for s in r.get("stages", [])}
    stages = Table(title="stages" if obs["target"] == "SingleRing" else "roles", title_justify="left")
    for col in ("stage", "shard", "state", "pid", "processed", "rate", "lag", "restarts"):
        stages.add_column(col, justify="right" if col in ("processed", "rate", "restarts", "pid") else "left")
    for s in obs["stages"]:
        style = "green" if s["state"] == "running" else "yellow" if s["state"] in ("starting", "restarting") \
            else "red" if s["state"] == "failed" else ""
        lag_total = capacity.get((s["stage"], s["shard"]), 0)
        stages.add_row(Text(str(s["stage"])), str(s["shard"]), Text(s["state"], style=style), str(s["pid"] or "-"),
                       _num(s["processed"]), _rate(stage_rates.get((s["stage"], s["shard"]))),
                       _bar(s["lag"], lag_total) + Text(f" {s['lag']:,}"),
                       Text(str(s["restarts"]), style="red" if s["restarts"] else ""))
    parts.append(stages)

    if obs.get("rings"):
        rings = Table(title="rings", title_justify="left")
        for col in ("shard", "cursor", "fill", "capacity"):
            rings.add_column(col)
        for k, ring in enumerate(obs["rings"]):
            rings.add_row(str(k), _num(ring["cursor"]), _bar(ring["fill"], ring["capacity"]), _num(ring["capacity"]))
        parts.append(rings)
        parts_table = Table(title="participants", title_justify="left")
        for col in ("shard", "role", "pid", "alive", "heartbeat age"):
            parts_table.add_column(col)
        for p in obs["participants"]:
            parts_table.add_row(str(p["shard"]), Text(p["role"]), str(p["pid"]),
                                "yes" if p["alive"] else Text("NO", style="red"), f"{p['heartbeat_age_ms']:.0f} ms")
        parts.append(parts_table)
    if obs.get("lanes"):
        lanes = Table(title="lanes", title_justify="left")
        for col in ("lane", "kind", "written", "fill", "drops", "on_full"):
            lanes.add_column(col)
        for lane in obs["lanes"]:
            fill = _bar(lane["fill"], lane["capacity"]) if lane["capacity"] else Text(f"{lane['fill']:,} unread")
            lanes.add_row(lane["name"], lane["kind"], _num(lane["write_pos"]), fill,
                          Text(_num(lane["drops"]), style="red" if lane["drops"] else ""), lane["on_full"])
        parts.append(lanes)
    if obs["journals"]:
        journals = Table(title="journals", title_justify="left")
        for col in ("lane", "records", "segments", "bytes"):
            journals.add_column(col)
        for j in obs["journals"]:
            journals.add_row(j["lane"], _num(j["records"]), _num(j["segments"]), _num(j["bytes"]))
        parts.append(journals)
    if obs["adapters"]:
        adapters = Table(title="adapters", title_justify="left")
        for col in ("endpoint", "direction", "name", "connected", "position", "lag"):
            adapters.add_column(col)
        for a in obs["adapters"]:
            conn = {True: Text("yes", style="green"), False: Text("NO", style="red")}.get(a["connected"], Text("-"))
            adapters.add_row(a["endpoint"], a["direction"], Text(a["name"]), conn, Text(str(a["position"])),
                             Text(str(a["lag"])))
        parts.append(adapters)
    if obs["actions"]:
        actions = Table(title="side effects", title_justify="left")
        for col in ("stage", "shard", "performed", "failed", "dead-lettered", "dry run"):
            actions.add_column(col)
        for a in obs["actions"]:
            actions.add_row(Text(a["stage"]), str(a["shard"]), _num(a["performed"]),
                            Text(_num(a["failed"]), style="red" if a["failed"] else ""),
                            _num(a["dead_lettered"]), _num(a["dry_run"]))
        parts.append(actions)
    if obs["dataguard"]:
        guard = Table(title="dataguard", title_justify="left")
        for col in ("stage", "shard", "seen", "accepted", "rejected", "dropped", "redacted"):
            guard.add_column(col)
        for d in obs["dataguard"]:
            guard.add_row(Text(d["stage"]), str(d["shard"]), _num(d["seen"]), _num(d["accepted"]),
                          _num(d["rejected"]), _num(d["out_drop"]), _num(d["out_forward_output"]))
        parts.append(guard)
    return Group(*parts)


def _capacities(obs: dict[str, Any]) -> dict[tuple[str, int], int]:
    """What each stage's lag bar is measured against: its ring's capacity (SingleRing) or the
    capacities of a role's ring input lanes (LaneGraph)."""
    out: dict[tuple[str, int], int] = {}
    rings = obs.get("rings") or []
    for s in obs["stages"]:
        if s["kind"] == "stage" and s["shard"] < len(rings):
            out[(s["stage"], s["shard"])] = int(rings[s["shard"]]["capacity"])
    lanes = {lane["name"]: lane for lane in obs.get("lanes") or []}
    for s in obs["stages"]:
        if s["kind"] == "role":
            out[(s["stage"], s["shard"])] = sum(int(lanes[n]["capacity"]) for n in s.get("inputs", []) if n in lanes)
    return out
