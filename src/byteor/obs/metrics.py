"""The Prometheus endpoint and health checks of a run: ``--metrics=HOST:PORT``.

:class:`MetricsServer` serves, from one daemon thread of the run's process (never from a stage's
loop, never touching a ring's hot path: it reads the run's files through an observation callable,
:class:`byteor.runtime.observe.Observer`):

* ``GET /metrics``: Prometheus text format (OpenMetrics when asked for) through ``prometheus_client``,
  every family of :data:`METRICS`, each computed from one observation per scrape;
* ``GET /healthz``: 200 ``ok`` while the run's process is alive and serving (the run is alive);
* ``GET /readyz``: 200 ``ready`` when every stage or role process is running and every adapter that
  reports a connection is connected; 503 with one reason per line otherwise (for example while a
  stage is being restarted).

Every label value is masked (:func:`byteor.obs.mask`): an adapter named by a URI with credentials,
or a secret value that found its way into a name, never reaches a scrape.

``prometheus_client`` and the HTTP server are imported only when metrics are asked for: stage
processes, which import the runtime's configuration, never pay for them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .counters import DATAGUARD_COUNTERS, STATES
from .redact import mask

__all__ = ["METRICS", "MetricsServer", "families", "parse_listen", "render"]

Observe = Callable[[], dict[str, Any]]

#: Every metric byteor exports: name (as exposed), type, labels beyond ``pipeline``, meaning.
METRICS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("byteor_pipeline_info", "info", ("spec_hash", "target", "executor", "posture"),
     "the running pipeline's identity: spec hash (the version), target, executor, posture"),
    ("byteor_up", "gauge", (), "1 while the run's session process is alive"),
    ("byteor_ready", "gauge", (), "1 when every stage process runs and every adapter is connected (/readyz)"),
    ("byteor_messages_in_total", "counter", (), "messages taken in by the pipeline's ingress"),
    ("byteor_messages_out_total", "counter", (), "messages delivered by the pipeline's egress"),
    ("byteor_messages_dropped_total", "counter", (),
     "messages dropped on purpose (a stage returned DROP, a lane's on_full=drop_newest)"),
    ("byteor_stage_processed_total", "counter", ("stage", "shard"),
     "messages a stage (SingleRing) or role (LaneGraph) has finished"),
    ("byteor_stage_lag_messages", "gauge", ("stage", "shard"),
     "messages waiting for the stage: ring cursor - its gating sequence (roles: unread input)"),
    ("byteor_stage_restarts_total", "counter", ("stage", "shard"), "times the supervisor restarted the process"),
    ("byteor_stage_up", "gauge", ("stage", "shard"), "1 while the stage process is registered and running"),
    ("byteor_stage_state", "gauge", ("stage", "shard", "state"),
     "1 for the process's current state: starting, running, restarting, exited, failed"),
    ("byteor_ring_fill_messages", "gauge", ("shard",), "slots of a SingleRing ring holding unconsumed messages"),
    ("byteor_ring_capacity_messages", "gauge", ("shard",), "slots of a SingleRing ring"),
    ("byteor_ring_fill_ratio", "gauge", ("shard",), "ring fill / capacity (0..1)"),
    ("byteor_participant_heartbeat_age_seconds", "gauge", ("shard", "role"),
     "time since a ring participant (producer, egress, a stage by its id) last beat"),
    ("byteor_lane_fill_messages", "gauge", ("lane",), "messages written to a lane and not read by its slowest reader"),
    ("byteor_lane_capacity_messages", "gauge", ("lane",), "slots of a ring lane (journal lanes: 0, unbounded)"),
    ("byteor_lane_fill_ratio", "gauge", ("lane",), "lane fill / capacity (ring lanes only)"),
    ("byteor_lane_written_total", "counter", ("lane",), "messages written to a lane"),
    ("byteor_lane_dropped_total", "counter", ("lane",), "messages a full lane dropped (on_full=drop_newest)"),
    ("byteor_lane_repaired_total", "counter", ("lane",),
     "mpsc slots published as dropped because their writer died between claim and publish"),
    ("byteor_journal_bytes", "gauge", ("lane",), "bytes of a journal lane's segment files on disk"),
    ("byteor_journal_segments", "gauge", ("lane",), "segment files of a journal lane"),
    ("byteor_policy_stage_decision", "gauge", ("stage", "decision"),
     "1 for the policy gate's decision for a side-effect stage at start (Allow, DryRunOnly)"),
    ("byteor_policy_decisions_total", "counter", ("stage", "shard", "outcome"),
     "side-effect messages by the decision applied: Allow (performed or failed), DryRunOnly (recorded)"),
    ("byteor_actions_performed_total", "counter", ("stage", "shard"), "side effects performed (HTTP POST, exec)"),
    ("byteor_actions_failed_total", "counter", ("stage", "shard"), "side effects that finally failed"),
    ("byteor_actions_dead_lettered_total", "counter", ("stage", "shard"),
     "failed side effects written to the dead-letter journal"),
    ("byteor_dataguard_messages_total", "counter", ("stage", "shard"), "envelopes a DataGuard stage checked"),
    ("byteor_dataguard_accepted_total", "counter", ("stage", "shard"), "envelopes DataGuard accepted"),
    ("byteor_dataguard_rejected_total", "counter", ("stage", "shard", "reason"),
     "envelopes DataGuard rejected, by reason: decode_err, codec_mismatch, schema_missing, "
     "schema_incompatible, redact_overflow"),
    ("byteor_dataguard_output_total", "counter", ("stage", "shard", "action"),
     "what DataGuard did with each envelope: drop, forward_input, forward_output"),
    ("byteor_dataguard_redact_noop_total", "counter", ("stage", "shard"),
     "redaction rules that found nothing to change"),
    ("byteor_adapter_connected", "gauge", ("adapter", "endpoint", "direction"),
     "1 when a source or sink adapter is connected, 0 while it reconnects"),
    ("byteor_adapter_committed_position", "gauge", ("adapter", "endpoint", "direction"),
     "the position a source last committed (offset, sequence, id as a number)"),
    ("byteor_adapter_lag_messages", "gauge", ("adapter", "endpoint", "direction"),
     "messages an adapter reports waiting upstream of byteor"),
    ("byteor_tuning_knob_state", "gauge", ("role", "knob", "state"),
     "1 for each process's tuning knob state: Applied, Degraded, Failed"),
)
_DOC = {name.removesuffix("_total"): doc for name, _kind, _labels, doc in METRICS}
_REJECT_REASONS = ("decode_err", "codec_mismatch", "schema_missing", "schema_incompatible", "redact_overflow")
_OUTPUTS = (("drop", "out_drop"), ("forward_input", "out_forward_input"), ("forward_output", "out_forward_output"))
assert set(_REJECT_REASONS) | {v for _k, v in _OUTPUTS} <= set(DATAGUARD_COUNTERS)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6; port 0 picks a free one); ``ValueError`` naming the
    problem otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: the port must be 0..65535")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{text!r}: the host is empty or has spaces")
    return host, int(port)


class _Families:
    """Metric families built up from one observation; label values masked, pipeline label first."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = mask(pipeline)
        self._by_name: dict[str, Any] = {}

    def add(self, kind: str, name: str, labels: dict[str, Any], value: float | None) -> None:
        if value is None:
            return
        family = self._by_name.get(name)
        keys = ["pipeline", *labels]
        if family is None:
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = self._by_name[name] = cls(name, _DOC[name], labels=keys)
        family.add_metric([self.pipeline, *(mask(str(v)) for v in labels.values())], float(value))

    def info(self, name: str, labels: dict[str, Any]) -> None:
        from prometheus_client.core import InfoMetricFamily

        family = InfoMetricFamily(name.removesuffix("_info"), _DOC[name], labels=["pipeline"])
        family.add_metric([self.pipeline], {k: mask(str(v)) for k, v in labels.items()})
        self._by_name[name] = family

    def __iter__(self) -> Iterator[Any]:
        return iter(self._by_name.values())


def families(obs: dict[str, Any]) -> list[Any]:
    """Every metric family (:data:`METRICS`) of one observation."""
    f = _Families(str(obs.get("pipeline") or "unknown"))
    session = obs.get("session") or {}
    f.info("byteor_pipeline_info", {"spec_hash": obs.get("spec_hash") or "", "target": obs.get("target") or "",
                                    "executor": obs.get("executor") or "", "posture": session.get("posture", "")})
    f.add("gauge", "byteor_up", {}, 1 if obs.get("alive") else 0)
    f.add("gauge", "byteor_ready", {}, 1 if obs.get("ready") else 0)
    f.add("counter", "byteor_messages_in", {}, obs.get("messages_in"))
    f.add("counter", "byteor_messages_out", {}, obs.get("messages_out"))
    f.add("counter", "byteor_messages_dropped", {}, obs.get("dropped"))
    for st in obs.get("stages", []):
        who = {"stage": st["stage"], "shard": st["shard"]}
        f.add("counter", "byteor_stage_processed", who, st["processed"])
        f.add("gauge", "byteor_stage_lag_messages", who, st["lag"])
        f.add("counter", "byteor_stage_restarts", who, st["restarts"])
        f.add("gauge", "byteor_stage_up", who, 1 if st["up"] else 0)
        if st["state"] != "unknown":
            for state in STATES[1:]:
                f.add("gauge", "byteor_stage_state", {**who, "state": state}, 1 if st["state"] == state else 0)
    for k, ring in enumerate(obs.get("rings", [])):
        f.add("gauge", "byteor_ring_fill_messages", {"shard": k}, ring["fill"])
        f.add("gauge", "byteor_ring_capacity_messages", {"shard": k}, ring["capacity"])
        f.add("gauge", "byteor_ring_fill_ratio", {"shard": k}, ring["fill"] / ring["capacity"])
    for p in obs.get("participants", []):
        f.add("gauge", "byteor_participant_heartbeat_age_seconds", {"shard": p["shard"], "role": p["role"]},
              p["heartbeat_age_ms"] / 1000.0)
    for lane in obs.get("lanes", []):
        who = {"lane": lane["name"]}
        f.add("gauge", "byteor_lane_fill_messages", who, lane["fill"])
        f.add("gauge", "byteor_lane_capacity_messages", who, lane["capacity"])
        if lane["capacity"]:
            f.add("gauge", "byteor_lane_fill_ratio", who, lane["fill"] / lane["capacity"])
        f.add("counter", "byteor_lane_written", who, lane["write_pos"])
        f.add("counter", "byteor_lane_dropped", who, lane["drops"])
        f.add("counter", "byteor_lane_repaired", who, lane.get("repaired", 0))
    for j in obs.get("journals", []):
        f.add("gauge", "byteor_journal_bytes", {"lane": j["lane"]}, j["bytes"])
        f.add("gauge", "byteor_journal_segments", {"lane": j["lane"]}, j["segments"])
    for p in obs.get("policy", []):
        f.add("gauge", "byteor_policy_stage_decision", {"stage": p["stage"], "decision": p["decision"]}, 1)
    for a in obs.get("actions", []):
        who = {"stage": a["stage"], "shard": a["shard"]}
        f.add("counter", "byteor_actions_performed", who, a["performed"])
        f.add("counter", "byteor_actions_failed", who, a["failed"])
        f.add("counter", "byteor_actions_dead_lettered", who, a["dead_lettered"])
        f.add("counter", "byteor_policy_decisions", {**who, "outcome": "Allow"}, a["performed"] + a["failed"])
        f.add("counter", "byteor_policy_decisions", {**who, "outcome": "DryRunOnly"}, a["dry_run"])
    for d in obs.get("dataguard", []):
        who = {"stage": d["stage"], "shard": d["shard"]}
        f.add("counter", "byteor_dataguard_messages", who, d["seen"])
        f.add("counter", "byteor_dataguard_accepted", who, d["accepted"])
        for reason in _REJECT_REASONS:
            f.add("counter", "byteor_dataguard_rejected", {**who, "reason": reason}, d[reason])
        for action, key in _OUTPUTS:
            f.add("counter", "byteor_dataguard_output", {**who, "action": action}, d[key])
        f.add("counter", "byteor_dataguard_redact_noop", who, d["redact_noop"])
    for ad in obs.get("adapters", []):
        who = {"adapter": ad["name"], "endpoint": ad["endpoint"], "direction": ad["direction"]}
        if isinstance(ad.get("connected"), bool):
            f.add("gauge", "byteor_adapter_connected", who, 1 if ad["connected"] else 0)
        f.add("gauge", "byteor_adapter_committed_position", who, _number(ad.get("position")))
        f.add("gauge", "byteor_adapter_lag_messages", who, _number(ad.get("lag")))
    for role, knobs in sorted((obs.get("tuning") or {}).items()):
        for k in knobs:
            f.add("gauge", "byteor_tuning_knob_state", {"role": role, "knob": k["knob"], "state": k["state"]}, 1)
    return list(f)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Collector:
    """A ``prometheus_client`` collector (``collect()``): one observation per scrape."""

    def __init__(self, observe: Observe) -> None:
        self._observe = observe

    def collect(self) -> Iterable[Any]:
        return families(self._observe())


def _registry(observe: Observe, *, process_metrics: bool) -> Any:
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(observe))
    if process_metrics:
        ProcessCollector(registry=registry)
    return registry


def render(observe: Observe) -> bytes:
    """The Prometheus text exposition of one observation (what ``/metrics`` serves, without HTTP)."""
    from prometheus_client import generate_latest

    data: bytes = generate_latest(_registry(observe, process_metrics=False))
    return data


def _server_classes(ipv6: bool) -> tuple[type[Any], type[Any]]:
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6 if ipv6 else socket.AF_INET

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not logged: one line per scrape would drown the run's events."""

    return Server, QuietHandler


class MetricsServer:
    """``/metrics``, ``/healthz``, ``/readyz`` on ``host:port`` from a daemon thread (module docstring).

    ``observe`` returns one observation; ``alive`` (default: always) says whether the run is still
    alive for ``/healthz``. :meth:`start` binds (``OSError`` when the address is taken) and returns
    the bound ``(host, port)``; :meth:`stop` shuts it down.
    """

    def __init__(self, host: str, port: int, observe: Observe, *, alive: Callable[[], bool] | None = None,
                 process_metrics: bool = True) -> None:
        self.host = host
        self.port = port
        self._observe = observe
        self._alive = alive or (lambda: True)
        self._process_metrics = process_metrics
        self._metrics_app: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return self.host, int(self._server.server_address[1])

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            ok = self._alive()
            return _plain(start_response, 200 if ok else 503, "ok\n" if ok else "not alive\n")
        if path == "/readyz":
            try:
                obs = self._observe()
            except Exception as exc:
                return _plain(start_response, 503, f"not ready: cannot observe the run: {type(exc).__name__}\n")
            if obs.get("ready"):
                return _plain(start_response, 200, "ready\n")
            return _plain(start_response, 503, "".join(f"not ready: {mask(r)}\n" for r in obs["not_ready"]))
        if path in ("/metrics", "/"):
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        return _plain(start_response, 404, "not found: try /metrics, /healthz, /readyz\n")

    def start(self) -> tuple[str, int]:
        from wsgiref.simple_server import make_server

        from prometheus_client import make_wsgi_app

        self._metrics_app = make_wsgi_app(_registry(self._observe, process_metrics=self._process_metrics))
        server_class, handler_class = _server_classes(":" in self.host)
        self._server = make_server(self.host, self.port, self._app, server_class=server_class,
                                   handler_class=handler_class)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="byteor-metrics", daemon=True)
        self._thread.start()
        return self.address

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=5)
            self._thread = None


def _plain(start_response: Callable[..., Any], status: int, body: str) -> list[bytes]:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    data = body.encode("utf-8")
    start_response(f"{status} {reason}", [("Content-Type", "text/plain; charset=utf-8"),
                                          ("Content-Length", str(len(data)))])
    return [data]
