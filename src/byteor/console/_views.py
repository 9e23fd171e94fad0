"""The console's HTML: server-rendered pages (landmarks, tables with captions and header cells,
labelled controls, states in words), one static script and one style sheet, nothing inline.

Every value that reaches a page passes through :func:`esc`; the values themselves come from the
observation reader, which masks secrets, and the token is never written into a page.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..obs.counters import DATAGUARD_COUNTERS
from ..obs.redact import mask, mask_value
from ..spec.model import PipelineSpecV1
from ._evidence import RedrivePreview
from ._live import DASH, Figures, counter_rows, dataguard_names, fmt_span, side_effect_names
from ._topology import Topology, fill_svg
from ._watch import Sample, Watch

__all__ = ["error_page", "list_page", "pipeline_page", "redrive_page", "replay_page"]

_DG_LABELS = {"seen": "checked", "accepted": "accepted", "rejected": "rejected", "decode_err": "decode error",
              "codec_mismatch": "codec mismatch", "schema_missing": "schema missing",
              "schema_incompatible": "schema incompatible", "redact_overflow": "redaction overflow",
              "out_drop": "dropped", "out_forward_input": "forwarded as received",
              "out_forward_output": "forwarded redacted", "redact_noop": "redaction found nothing"}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _attrs(**attrs: Any) -> str:
    out = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(out)


def _live(tag: str, ident: str, fig: Figures, **attrs: Any) -> str:
    """An element the page's script keeps up to date (text and state from ``fig``)."""
    return (f"<{tag}{_attrs(id=ident, data_state=fig.state.get(ident), **attrs)}>"
            f"{esc(fig.text.get(ident, DASH))}</{tag}>")


def _table(caption: str, head: Sequence[str], rows: Iterable[str], *, numeric: Iterable[int] = (),
           empty: str = "none") -> str:
    nums = set(numeric)
    th = "".join(f'<th scope="col"{_attrs(class_="num" if i in nums else None)}>{esc(h)}</th>'
                 for i, h in enumerate(head))
    body = "".join(rows) or f'<tr><td colspan="{len(head)}">{esc(empty)}</td></tr>'
    return (f'<div class="scroll"><table><caption>{esc(caption)}</caption><thead><tr>{th}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _td(content: str, *, num: bool = False) -> str:
    return f"<td{_attrs(class_='num' if num else None)}>{content}</td>"


def layout(title: str, main: str, *, crumbs: Sequence[tuple[str | None, str]] = (), events: str | None = None,
           writes: str, data: dict[str, str] | None = None) -> str:
    nav = "".join(f'<li><a href="{esc(href)}">{esc(text)}</a></li>' if href else
                  f'<li aria-current="page">{esc(text)}</li>' for href, text in crumbs)
    body_attrs = _attrs(data_events=events, **{f"data_{k}": v for k, v in (data or {}).items()})
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · byteor console</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head>'
        f"<body{body_attrs}>"
        '<a class="skip" href="#main">Skip to the content</a>'
        '<header><p class="brand"><a href="/">byteor console</a></p>'
        f'<nav aria-label="You are here"><ol class="crumbs">{nav}</ol></nav></header>'
        f'<main id="main">{main}</main>'
        f'<footer><p>{esc(writes)}</p><p id="live-status">'
        f'{"Live figures need JavaScript; reload the page to update them." if events else ""}</p></footer>'
        "</body></html>\n")


# ==================================================================================================
# the list
# ==================================================================================================


def list_page(rows: list[tuple[Watch, Sample]], fig: Figures, *, root: str, writes: str) -> str:
    body = []
    for i, (watch, sample) in enumerate(rows):
        obs = sample.obs
        session = obs["session"] or {}
        spec_hash = str(obs["spec_hash"] or "")
        model = f"{obs['target']} {obs['executor'] or ''}".strip()
        body.append(
            "<tr>"
            f'<th scope="row"><a href="/p/{esc(watch.id)}">{esc(obs["pipeline"])}</a></th>'
            + _td(f'<code title="{esc(spec_hash)}">{esc(spec_hash[:15] or DASH)}</code>')
            + _td(esc(model)) + _td(esc(session.get("posture", DASH)))
            + _td(_live("span", f"p{i}-uptime", fig), num=True)
            + _td(_live("span", f"p{i}-in-rate", fig), num=True) + _td(_live("span", f"p{i}-out-rate", fig), num=True)
            + _td(_live("span", f"p{i}-in", fig), num=True) + _td(_live("span", f"p{i}-out", fig), num=True)
            + _td(_live("strong", f"p{i}-state", fig))
            + "</tr>")
    table = _table(f"{len(rows)} pipeline(s) running under {root}",
                   ("pipeline", "spec hash", "model", "posture", "uptime", "rate in", "rate out", "messages in",
                    "messages out", "state"), body, numeric=(4, 5, 6, 7, 8),
                   empty=f"No pipeline is running under {root}.")
    main = ("<h1>Pipelines on this host</h1>"
            "<p>Every pipeline whose session state is found under the root directory. Rates are messages "
            "per second over the last second; the figures update every second.</p>" + table)
    return layout("Pipelines", main, crumbs=[(None, "Pipelines")], events="/events", writes=writes,
                  data={"shape": fig.shape, "pipelines": "\n".join(w.id for w, _ in rows)})


# ==================================================================================================
# one pipeline
# ==================================================================================================


def _dl(items: Iterable[tuple[str, str]], cls: str = "facts") -> str:
    return f'<dl class="{cls}">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _section(ident: str, title: str, content: str) -> str:
    return f'<section aria-labelledby="{ident}"><h2 id="{ident}">{esc(title)}</h2>{content}</section>'


def _summary(watch: Watch, sample: Sample, fig: Figures) -> str:
    obs = sample.obs
    session = obs["session"] or {}
    state = (_live("strong", "hdr-state", fig, aria_live="polite") + " "
             + _live("span", "hdr-reasons", fig, class_="reasons"))
    facts = [
        ("state", state),
        ("spec hash", f"<code>{esc(obs['spec_hash'] or DASH)}</code>"),
        ("model", esc(f"{obs['target']} {obs['executor'] or ''}".strip())),
        ("posture", esc(session.get("posture", DASH)) + (" (dry run: side effects recorded, not performed)"
                                                         if session.get("dry_run") else "")),
        ("process", esc(session.get("pid", DASH))),
        ("uptime", _live("span", "hdr-uptime", fig)),
        ("files", f"<code>{esc(watch.path)}</code>"),
    ]
    if session.get("metrics"):
        facts.append(("metrics", f"<code>http://{esc(session['metrics'])}/metrics</code>"))
    flow = _dl([
        ("messages in", _live("span", "hdr-messages_in", fig) + " (" + _live("span", "hdr-in-rate", fig) + ")"),
        ("messages out", _live("span", "hdr-messages_out", fig) + " (" + _live("span", "hdr-out-rate", fig) + ")"),
        ("dropped on purpose", _live("span", "hdr-dropped", fig)),
    ], "facts flow")
    return _section("summary-h", "Summary", _dl(facts) + flow)


def _topology_section(watch: Watch, topo: Topology | None, fig: Figures) -> str:
    if topo is None:
        return _section("topology-h", "Topology", "<p>This run's session state does not carry its spec, so its "
                                                  "graph cannot be drawn.</p>")
    note = (f'<p><a href="/p/{esc(watch.id)}/dot">The DOT source</a> (as <code>byteor dot</code> prints it). '
            "Each stage, role and lane shows its live figures: lag (messages waiting for it) and rate "
            "(messages per second) for a stage or role, fill and drops for a lane.</p>")
    if topo.svg is not None:
        figure = (f'<figure class="graph">{fill_svg(topo.svg, fig.text, fig.state)}'
                  '<figcaption id="topology-caption">Stages in order of the data flow; the tables below '
                  "give the same figures as text.</figcaption></figure>")
    else:
        figure = (f'<p class="notice" role="note">No drawing: {esc(topo.why)}. The graph as DOT text:</p>'
                  f'<pre class="dot"><code>{esc(topo.dot)}</code></pre>')
    return _section("topology-h", "Topology", figure + note)


def _stages_section(sample: Sample, fig: Figures) -> str:
    obs = sample.obs
    roles = obs["target"] == "LaneGraph"
    rows = []
    for n, s in enumerate(obs["stages"]):
        rows.append(
            f'<tr><th scope="row">{esc(s["stage"])}</th>'
            + ("" if roles else _td(esc(s["shard"]), num=True))
            + _td(_live("span", f"st{n}-state", fig)) + _td(_live("span", f"st{n}-pid", fig), num=True)
            + _td(_live("span", f"st{n}-processed", fig), num=True) + _td(_live("span", f"st{n}-rate", fig), num=True)
            + _td(_live("span", f"st{n}-lag", fig), num=True) + _td(_live("span", f"st{n}-restarts", fig), num=True)
            + "</tr>")
    head = ["role", "state", "pid", "processed", "rate", "lag", "restarts"] if roles else \
        ["stage", "shard", "state", "pid", "processed", "rate", "lag", "restarts"]
    table = _table("Roles: one process each" if roles else "Stages: one process per stage and shard", head, rows,
                   numeric=range(2, 8) if not roles else (2, 3, 4, 5, 6),
                   empty="No stage has registered yet.")
    parts = [table]
    if obs.get("rings"):
        parts.append(_table("Rings: one per shard", ("shard", "cursor", "fill"), (
            f'<tr><th scope="row">{k}</th>' + _td(_live("span", f"rg{k}-cursor", fig), num=True)
            + _td(_live("span", f"rg{k}-fill", fig), num=True) + "</tr>" for k in range(len(obs["rings"]))),
            numeric=(1, 2)))
    if obs.get("lanes"):
        parts.append(_table("Lanes", ("lane", "kind", "on full", "written", "fill", "dropped"), (
            f'<tr><th scope="row">{esc(lane["name"])}</th>' + _td(esc(lane["kind"])) + _td(esc(lane["on_full"]))
            + _td(_live("span", f"ln{n}-written", fig), num=True) + _td(_live("span", f"ln{n}-fill", fig), num=True)
            + _td(_live("span", f"ln{n}-drops", fig), num=True) + "</tr>"
            for n, lane in enumerate(obs["lanes"])), numeric=(3, 4, 5)))
    title = "Roles and lanes" if roles else "Stages and rings"
    return _section("stages-h", title, "".join(parts))


def _approval(session: dict[str, Any]) -> str:
    approval = session.get("approval")
    if not isinstance(approval, dict):
        why = session.get("approval_error")
        if why:
            return f"<p>No approval in force: the one given was not accepted ({esc(why)}).</p>"
        return "<p>No approval in force: no stage of this run needed one in this posture.</p>"
    from .._formats import parse_rfc3339

    expires = str(approval.get("expires_at", ""))
    try:
        expires_ms = int(parse_rfc3339(expires).timestamp() * 1000)
    except (ValueError, TypeError):
        expires_ms = None
    left = None if expires_ms is None else expires_ms - int(time.time() * 1000)
    if left is None:
        remaining = '<span id="approval-remaining">unknown</span>'
    else:
        word = f"expires in {fmt_span(left / 1000)}" if left > 0 else f"EXPIRED {fmt_span(-left / 1000)} ago"
        state = "ok" if left > 3_600_000 else "warn" if left > 0 else "bad"
        remaining = (f'<strong id="approval-remaining" data-expires-ms="{expires_ms}" data-state="{state}">'
                     f"{esc(word)}</strong>")
    caps = ", ".join(str(c) for c in approval.get("capabilities") or []) or DASH
    return _dl([
        ("approval", f"<code>{esc(approval.get('approval_id', DASH))}</code>"),
        ("key id", f"<code>{esc(approval.get('kid', DASH))}</code>"),
        ("issued by", esc(approval.get("issued_by", DASH))),
        ("capabilities", esc(caps)),
        ("issued at", f"<time>{esc(approval.get('issued_at', DASH))}</time>"),
        ("expires at", f'<time datetime="{esc(expires)}">{esc(expires)}</time>'),
        ("time left", remaining),
        ("for posture", esc(approval.get("environment_posture", DASH))),
    ])


def _policy_section(watch: Watch, sample: Sample, fig: Figures, redrive: RedrivePreview) -> str:
    obs = sample.obs
    session = obs["session"] or {}
    decisions = [p for p in session.get("policy") or [] if isinstance(p, dict)]
    if not decisions:
        return _section("policy-h", "Policy", "<p>No side-effecting stage: the policy gate had nothing to "
                                              "decide.</p>")
    rows = [f'<tr><th scope="row">{esc(p.get("stage"))}</th>' + _td(f"<code>{esc(p.get('key', DASH))}</code>")
            + _td(esc(p.get("family", DASH))) + _td(f"<strong>{esc(p.get('decision'))}</strong>")
            + _td(esc(p.get("reason", ""))) + "</tr>" for p in decisions]
    gate = _table(f"Decisions of the policy gate at start (posture {session.get('posture', DASH)})",
                  ("stage", "key", "family", "decision", "reason"), rows)
    head = ("stage", "shard", "performed", "failed", "dead-lettered", "recorded only")
    counts = _table("Side effects so far", head, (
        f'<tr><th scope="row">{esc(r["name"])}</th>' + _td(esc(r["shard"]), num=True)
        + "".join(_td(_live("span", f"ac{n}-{k}", fig), num=True)
                  for k in ("performed", "failed", "dead_lettered", "dry_run")) + "</tr>"
        for n, r in enumerate(counter_rows(obs, side_effect_names(session)))), numeric=(1, 2, 3, 4, 5))
    pending = [r for r in redrive.records if r["outcome"] == "would_send"]
    dead = _dl([
        ("dead-lettered by this run", _live("span", "dl-run", fig)),
        ("pending in the journal", f"{len(redrive.records)} record(s), {len(pending)} of which redrive would send"
         if redrive.why is None else esc(redrive.why)),
        ("journal", f"<code>{esc(redrive.directory)}</code>" if redrive.directory else DASH),
    ])
    link = f'<p><a href="/p/{esc(watch.id)}/dead-letter">What <code>redrive</code> would send</a></p>'
    return _section("policy-h", "Policy and approval",
                    "<h3>Approval in force</h3>" + _approval(session) + "<h3>Decisions</h3>" + gate + counts
                    + "<h3>Dead letters</h3>" + dead + link)


def _dataguard_section(sample: Sample, spec: PipelineSpecV1 | None, fig: Figures) -> str:
    rows = counter_rows(sample.obs, dataguard_names(spec))
    if not dataguard_names(spec):
        return ""
    body = [f'<tr><th scope="row">{esc(r["name"])}</th>' + _td(esc(r["shard"]), num=True)
            + "".join(_td(_live("span", f"dg{n}-{k}", fig), num=True) for k in DATAGUARD_COUNTERS) + "</tr>"
            for n, r in enumerate(rows)]
    head = ("stage", "shard", *(_DG_LABELS[k] for k in DATAGUARD_COUNTERS))
    table = _table("DataGuard outcomes per stage process", head, body, numeric=range(1, 2 + len(DATAGUARD_COUNTERS)),
                   empty="No DataGuard process has started yet.")
    return _section("dataguard-h", "DataGuard", table)


def _token_field(form: str, writes_enabled: bool) -> str:
    if not writes_enabled:
        return ""
    return (f'<p><label for="{form}-token">Console token</label> '
            f'<input id="{form}-token" name="token" type="password" autocomplete="off" required '
            f'aria-describedby="token-help"></p>')


def _evidence_section(watch: Watch, spec: PipelineSpecV1 | None, bundles: list[str], writes_enabled: bool,
                      journal_lanes: list[str]) -> str:
    help_text = ("Both write files, so both need the token the console was started with "
                 "(<code>--token-env</code>); it is sent with the form and never shown."
                 if writes_enabled else
                 "<strong>Writes are turned off:</strong> this console was started without "
                 "<code>--token-env</code>, so it only shows. A request that writes is refused.")
    bundle_form = (f'<form method="post" action="/p/{esc(watch.id)}/bundle" class="write">'
                   "<h3>Incident bundle</h3><p>Writes an incident bundle of this pipeline now (spec, validation, "
                   "policy audit, the pipeline process's environment with secrets redacted, ring snapshot or lane "
                   "state, journals) and offers it as a <code>.tar.gz</code> download.</p>"
                   + _token_field("bundle", writes_enabled)
                   + '<p><button type="submit">Write a bundle and download it</button></p></form>')
    if bundles:
        options = "".join(f'<option value="{esc(b)}">{esc(b)}</option>' for b in bundles)
        bundle_select = ('<p><label for="replay-bundle">Bundle</label> '
                         f'<select id="replay-bundle" name="bundle">{options}</select></p>')
    else:
        bundle_select = "<p>No bundle of this pipeline version yet: write one first.</p>"
    if journal_lanes:
        lanes = "".join(f'<option value="{esc(n)}">{esc(n)}</option>' for n in journal_lanes)
        lane_select = ('<p><label for="replay-lane">Journal lane</label> '
                       f'<select id="replay-lane" name="journal_lane">{lanes}</select></p>')
    else:
        lane_select = ('<p><label for="replay-lane">Journal lane</label> <input id="replay-lane" name="journal_lane" '
                       'required aria-describedby="replay-lane-help"> <span id="replay-lane-help">this run records no '
                       "journal (a SingleRing run records its input when started with <code>--journal-dir</code>)"
                       "</span></p>")
    replay_form = (f'<form method="post" action="/p/{esc(watch.id)}/replay" class="write">'
                   "<h3>Replay preview</h3><p>Replays the last records of a bundle's journal lane offline in "
                   "<code>dry_run</code> mode and shows the audit it would write: no action is performed and the "
                   "audit file is deleted afterwards.</p>" + bundle_select + lane_select
                   + '<p><label for="replay-last-n">Last records</label> <input id="replay-last-n" name="last_n" '
                   'type="number" min="1" max="1000" value="10" required></p>'
                   + _token_field("replay", writes_enabled)
                   + f'<p><button type="submit"{_attrs(disabled=not bundles)}>Preview the replay</button></p></form>')
    return _section("evidence-h", "Evidence", f'<p id="token-help">{help_text}</p>' + bundle_form + replay_form)


def pipeline_page(watch: Watch, sample: Sample, fig: Figures, *, spec: PipelineSpecV1 | None,
                  topo: Topology | None, redrive: RedrivePreview, bundles: list[str], journal_lanes: list[str],
                  writes_enabled: bool, writes: str) -> str:
    obs = sample.obs
    name = str(obs["pipeline"])
    main = (f"<h1>{esc(name)}</h1>"
            + _summary(watch, sample, fig) + _topology_section(watch, topo, fig) + _stages_section(sample, fig)
            + _policy_section(watch, sample, fig, redrive) + _dataguard_section(sample, spec, fig)
            + _evidence_section(watch, spec, bundles, writes_enabled, journal_lanes))
    return layout(name, main, crumbs=[("/", "Pipelines"), (None, name)], events=f"/p/{watch.id}/events",
                  writes=writes, data={"shape": fig.shape})


# ==================================================================================================
# results and errors
# ==================================================================================================


def redrive_page(watch: Watch, name: str, preview: RedrivePreview, *, writes: str) -> str:
    records = mask_value(preview.records)
    rows = [f'<tr><th scope="row"><code>{esc(r["id"])}</code></th>' + _td(f"<code>{esc(r['stage_key'])}</code>")
            + _td(esc(r["target"])) + _td(f"<strong>{esc(r['outcome'].replace('_', ' '))}</strong>")
            + _td(esc(r["detail"])) + "</tr>" for r in records]
    intro = ("<p>Pending records of the dead-letter journal and what <code>byteor-actiongraph redrive</code> would "
             "do with each under the decisions this run was given (a real redrive decides again, with the "
             "approval it is given). Nothing was sent to build this page.</p>")
    where = f"<p>Journal: <code>{esc(preview.directory)}</code></p>" if preview.directory else ""
    why = f'<p class="notice" role="note">{esc(preview.why)}</p>' if preview.why else ""
    table = _table("What redrive would send", ("record", "stage key", "target", "outcome", "detail"), rows,
                   empty="No pending record.")
    main = f"<h1>Dead letters of {esc(name)}</h1>" + intro + where + why + table
    return layout(f"Dead letters of {name}", main,
                  crumbs=[("/", "Pipelines"), (f"/p/{watch.id}", name), (None, "Dead letters")], writes=writes)


def replay_page(watch: Watch, name: str, bundle: str, result: dict[str, Any], *, writes: str) -> str:
    audit = mask_value(result["audit"])
    counts: dict[tuple[str, str, str, str], int] = {}
    for a in audit.get("actions", []):
        key = (str(a.get("role")), str(a.get("action")), str(a.get("target")), str(a.get("decision")))
        counts[key] = counts.get(key, 0) + 1
    rows = [f'<tr><th scope="row">{esc(role)}</th>' + _td(esc(action)) + _td(esc(target))
            + _td(f"<strong>{esc(decision)}</strong>") + _td(str(n), num=True) + "</tr>"
            for (role, action, target, decision), n in counts.items()]
    inp = audit.get("input", {})
    outcome = audit.get("outcome") or {}
    facts = _dl([
        ("bundle", f"<code>{esc(bundle)}</code>"),
        ("journal lane", esc(inp.get("journal_lane", DASH))),
        ("records", f"{esc(inp.get('scanned_records', DASH))} in the lane, {len(inp.get('sample_sha256', []))} "
                    f"selected ({esc(inp.get('selected_bytes', DASH))} bytes)"),
        ("outputs", esc(result.get("outputs", DASH))),
        ("completed", "yes" if outcome.get("completed") else f"no: {esc(outcome.get('message') or '')}"),
        ("posture", esc((audit.get("policy") or {}).get("env", DASH))),
    ])
    table = _table("Actions the replay reached", ("role", "action", "target", "decision", "count"), rows,
                   numeric=(4,), empty="No action: the records reach no side-effecting stage.")
    text = json.dumps(audit, indent=2)
    main = (f"<h1>Replay preview of {esc(name)}</h1>"
            "<p>A <code>dry_run</code> replay ran offline: no action was performed, and the audit below, "
            "which it wrote to a temporary file, was deleted after reading.</p>" + facts + table
            + _section("audit-h", "The audit it would write",
                       f'<pre class="audit"><code>{esc(text)}</code></pre>'))
    return layout(f"Replay preview of {name}", main,
                  crumbs=[("/", "Pipelines"), (f"/p/{watch.id}", name), (None, "Replay preview")], writes=writes)


def error_page(status: int, title: str, message: str, *, writes: str, back: str | None = "/") -> str:
    link = f'<p><a href="{esc(back)}">Back</a></p>' if back else ""
    main = (f"<h1>{esc(title)}</h1>"
            f'<p class="notice" role="alert"><strong>{status}</strong>: {esc(mask(message))}</p>{link}')
    return layout(title, main, crumbs=[("/", "Pipelines"), (None, title)], writes=writes)
