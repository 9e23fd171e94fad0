"""The figures a page shows and keeps up to date, computed in one place for the first render and for
every Server-Sent Event: ``text`` maps an element id to its text, ``state`` an element id to a word
(``ok``, ``warn``, ``bad``, ``gone``) the style sheet colours; the text always says the state too, so
nothing depends on colour. Element ids are built from row positions, never from names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..obs.counters import DATAGUARD_COUNTERS
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1
from ._topology import LIVE_ID, Node
from ._watch import Sample

__all__ = ["Figures", "dataguard_names", "fmt_count", "fmt_rate", "fmt_span", "list_figures",
           "pipeline_figures", "pipeline_state", "side_effect_names"]

DASH = "–"
_STAGE_STATE = {"running": "ok", "starting": "warn", "restarting": "warn", "failed": "bad", "exited": "gone",
                "unknown": "gone"}


@dataclass
class Figures:
    text: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    #: the number of rows of each table: a page whose rows differ reloads instead of updating
    shape: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "state": self.state, "shape": self.shape}


def fmt_count(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else DASH


def fmt_rate(v: Any) -> str:
    return DASH if v is None else f"{v:,.0f}/s"


def fmt_span(seconds: float) -> str:
    """``3d 4h 05m 06s``, leading zero units left out (the page's script writes the same form)."""
    s = max(0, int(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m:02d}m {s:02d}s"
    if h:
        return f"{h}h {m:02d}m {s:02d}s"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def pipeline_state(sample: Sample) -> tuple[str, str]:
    """(word shown, state class): READY, NOT READY, GONE (its process died), ENDED (files gone)."""
    obs = sample.obs
    if not sample.running:
        return "ENDED", "gone"
    if obs["session"] is not None and not obs["alive"]:
        return "GONE", "bad"
    return ("READY", "ok") if obs["ready"] else ("NOT READY", "bad")


def _uptime(obs: dict[str, Any]) -> str:
    session = obs["session"]
    if not session:
        return DASH
    return fmt_span((obs["taken_unix_ms"] - int(session["started_unix_ms"])) / 1000)


def list_figures(samples: list[Sample]) -> Figures:
    fig = Figures(shape=str(len(samples)))
    for i, sample in enumerate(samples):
        obs, r = sample.obs, sample.rates or {}
        word, cls = pipeline_state(sample)
        fig.text[f"p{i}-state"] = word
        fig.state[f"p{i}-state"] = cls
        fig.text[f"p{i}-uptime"] = _uptime(obs)
        fig.text[f"p{i}-in"] = fmt_count(obs["messages_in"])
        fig.text[f"p{i}-out"] = fmt_count(obs["messages_out"])
        fig.text[f"p{i}-in-rate"] = fmt_rate(r.get("messages_in_per_s"))
        fig.text[f"p{i}-out-rate"] = fmt_rate(r.get("messages_out_per_s"))
    return fig


def side_effect_names(session: dict[str, Any] | None) -> list[str]:
    """Stage ids / role names the policy gate decided (side-effecting stages), in spec order."""
    return [str(p["stage"]) for p in (session or {}).get("policy") or [] if isinstance(p, dict)]


def dataguard_names(spec: PipelineSpecV1 | None) -> list[str]:
    if isinstance(spec, SingleRingSpecV1):
        return [st.id for st in spec.stages if (st.resolver_key or "").startswith("dataguard:")]
    if isinstance(spec, LaneGraphSpecV1):
        return [r.name for r in spec.roles if (r.resolver_key or "").startswith("dataguard:")]
    return []


def counter_rows(obs: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """The counters rows (one per process: stage x shard, or role) of the stages named."""
    wanted = set(names)
    return [r for r in obs.get("counters") or [] if r["kind"] != "session" and r["name"] in wanted]


def _node_text(node: Node, obs: dict[str, Any], rates: dict[str, Any] | None) -> tuple[str, str]:
    if node.kind == "lane":
        lane = next((ln for ln in obs.get("lanes") or [] if ln["name"] == node.name), None)
        if lane is None:
            return DASH, "gone"
        text = (f"fill {lane['fill']:,}/{lane['capacity']:,}" if lane["capacity"]
                else f"{lane['fill']:,} unread")
        if lane["drops"]:
            return f"{text} · {lane['drops']:,} dropped", "warn"
        return text, "ok"
    entries = [s for s in obs["stages"] if s["stage"] == node.name]
    if not entries:
        return DASH, "gone"
    lag = sum(int(s["lag"]) for s in entries)
    per_s = {(s["stage"], s["shard"]): s["processed_per_s"] for s in (rates or {}).get("stages", [])}
    known = [per_s.get((s["stage"], s["shard"])) for s in entries]
    rate = None if rates is None or any(v is None for v in known) else sum(v or 0.0 for v in known)
    states = {s["state"] for s in entries}
    text = f"lag {lag:,} · {fmt_rate(rate)}"
    cls = "ok"
    for word in ("failed", "restarting", "starting", "exited", "unknown"):
        if word in states:
            text += f" · {word}"
            cls = _STAGE_STATE[word]
            break
    return text, cls


def pipeline_figures(sample: Sample, nodes: tuple[Node, ...], spec: PipelineSpecV1 | None) -> Figures:
    obs, r = sample.obs, sample.rates
    rates = r or {}
    fig = Figures()
    word, cls = pipeline_state(sample)
    fig.text["hdr-state"] = word
    fig.state["hdr-state"] = cls
    fig.text["hdr-reasons"] = "; ".join(obs["not_ready"]) if sample.running and obs["not_ready"] else ""
    fig.text["hdr-uptime"] = _uptime(obs)
    for key in ("messages_in", "messages_out", "dropped"):
        fig.text[f"hdr-{key}"] = fmt_count(obs[key])
    fig.text["hdr-in-rate"] = fmt_rate(rates.get("messages_in_per_s"))
    fig.text["hdr-out-rate"] = fmt_rate(rates.get("messages_out_per_s"))

    for i, node in enumerate(nodes):
        text, node_cls = _node_text(node, obs, r)
        fig.text[LIVE_ID.format(i)] = text
        fig.state[LIVE_ID.format(i)] = node_cls

    per_s = {(s["stage"], s["shard"]): s["processed_per_s"] for s in rates.get("stages", [])}
    for n, s in enumerate(obs["stages"]):
        fig.text[f"st{n}-state"] = s["state"]
        fig.state[f"st{n}-state"] = _STAGE_STATE.get(s["state"], "gone")
        fig.text[f"st{n}-pid"] = str(s["pid"] or DASH)
        fig.text[f"st{n}-processed"] = fmt_count(s["processed"])
        fig.text[f"st{n}-rate"] = fmt_rate(per_s.get((s["stage"], s["shard"])))
        fig.text[f"st{n}-lag"] = fmt_count(s["lag"])
        fig.text[f"st{n}-restarts"] = fmt_count(s["restarts"])
        if s["restarts"]:
            fig.state[f"st{n}-restarts"] = "warn"

    for k, ring in enumerate(obs.get("rings") or []):
        fig.text[f"rg{k}-cursor"] = fmt_count(ring["cursor"])
        fig.text[f"rg{k}-fill"] = f"{ring['fill']:,} of {ring['capacity']:,}"
    for n, lane in enumerate(obs.get("lanes") or []):
        fig.text[f"ln{n}-written"] = fmt_count(lane["write_pos"])
        fig.text[f"ln{n}-fill"] = (f"{lane['fill']:,} of {lane['capacity']:,}" if lane["capacity"]
                                   else f"{lane['fill']:,} unread")
        fig.text[f"ln{n}-drops"] = fmt_count(lane["drops"])
        if lane["drops"]:
            fig.state[f"ln{n}-drops"] = "warn"

    actions = counter_rows(obs, side_effect_names(obs["session"]))
    dead = 0
    for n, row in enumerate(actions):
        for key in ("performed", "failed", "dead_lettered", "dry_run"):
            fig.text[f"ac{n}-{key}"] = fmt_count(row[f"actions_{key}"])
        if row["actions_failed"]:
            fig.state[f"ac{n}-failed"] = "bad"
        dead += int(row["actions_dead_lettered"])
    fig.text["dl-run"] = fmt_count(dead)

    guards = counter_rows(obs, dataguard_names(spec))
    for n, row in enumerate(guards):
        for key in DATAGUARD_COUNTERS:
            fig.text[f"dg{n}-{key}"] = fmt_count(row[f"dataguard_{key}"])
        if row["dataguard_rejected"]:
            fig.state[f"dg{n}-rejected"] = "warn"

    fig.shape = "/".join(str(len(x)) for x in (nodes, obs["stages"], obs.get("rings") or [], obs.get("lanes") or [],
                                               actions, guards))
    return fig
