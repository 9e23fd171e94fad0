"""``byteor-edgeplane run``: the run session bound to transports by URI.

``run SPEC --ingress=URI --egress=URI`` (one ingress and one egress endpoint), ``--endpoint=NAME=URI``
(a LaneGraph endpoint by name, repeatable) or ``--bindings=FILE`` (``endpoint.<name>.uri=URI`` lines);
``--max-messages=N`` stops once N messages taken from ingress have left egress (or were dropped) and
their positions are committed; ``--idle-exit=SECONDS`` stops after that long with nothing to read.
Every other option is ``run``'s. See docs/adapters.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

from .._errors import UsageError
from ..adapters import Endpoint, open_sink, open_source, parse_uri
from ..edges import CollectSink
from ..edges.base import Batch, Ingress, Sink, Source
from ..runtime.session import RunSession
from . import run as run_verb
from ._common import spec_path

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser, verb_name: str) -> None:
    run_verb.configure(parser, verb_name)
    edge = parser.add_argument_group("edge bindings (docs/adapters.md)")
    edge.add_argument("--ingress", metavar="URI",
                      help="where messages come from: kafka://, nats://, redis://, rabbitmq-stream://, mqtt://, "
                           "grpc:// (a server), http:// (a server), ws:// (a server), file:PATH?format=..., or - "
                           "(stdin, --input-format)")
    edge.add_argument("--egress", metavar="URI",
                      help="where messages go (the same schemes, https:// too; - is stdout in --output)")
    edge.add_argument("--endpoint", metavar="NAME=URI", action="append", default=[],
                      help="bind a LaneGraph endpoint by name (repeatable)")
    edge.add_argument("--bindings", metavar="FILE", help="endpoint bindings as lines endpoint.<name>.uri=URI")
    edge.add_argument("--max-messages", metavar="N", type=_positive_int,
                      help="stop once N messages taken from ingress left egress and were committed (exit 0)")
    edge.add_argument("--idle-exit", metavar="SECONDS", type=_positive_float,
                      help="stop after this long with nothing to read (exit 0)")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    if args.verb != "run":
        return run_verb.run(args)
    return _run(args)


# ==================================================================================================
# Bindings
# ==================================================================================================


def read_bindings(path: str) -> dict[str, str]:
    """``endpoint.<name>.uri=URI`` lines (``#`` comments, blank lines); exit 2 naming line and key."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise UsageError(f"--bindings file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--bindings {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, eq, value = text.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not eq or len(parts) != 3 or parts[0] != "endpoint" or parts[2] != "uri" or not parts[1]:
            raise UsageError(f"--bindings {path} line {n}: expected endpoint.<name>.uri=URI, got key {key!r}")
        if parts[1] in out:
            raise UsageError(f"--bindings {path} line {n}: endpoint {parts[1]!r} bound twice")
        out[parts[1]] = value.strip()
    return out


def _bindings(args: argparse.Namespace, session: RunSession) -> tuple[dict[str, Endpoint], dict[str, Endpoint]]:
    """Ingress and egress endpoint name -> parsed binding."""
    named: dict[str, tuple[str, str]] = {}
    if args.bindings:
        for name, uri in read_bindings(args.bindings).items():
            named[name] = (uri, f"--bindings endpoint.{name}.uri")
    for item in args.endpoint:
        name, eq, uri = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--endpoint expects NAME=URI, got {parse_uri_safe(item)!r}")
        if name in named:
            raise UsageError(f"--endpoint {name}: endpoint bound twice")
        named[name] = (uri, f"--endpoint {name}")
    ingress_names, egress_names = session.ingress, session.egress
    unknown = sorted(set(named) - set(ingress_names) - set(egress_names))
    if unknown:
        raise UsageError(f"no endpoint named {unknown[0]!r} (ingress: {', '.join(ingress_names)}; "
                         f"egress: {', '.join(egress_names)})")
    src: dict[str, Endpoint] = {}
    dst: dict[str, Endpoint] = {}
    for name, (uri, label) in named.items():
        (src if name in ingress_names else dst)[name] = parse_uri(uri, label)
    one_shot = any(getattr(args, n) is not None for n in ("input_hex", "input_ascii", "input"))
    if args.ingress is not None:
        if len(ingress_names) != 1:
            raise UsageError(f"--ingress binds one endpoint; this graph has {len(ingress_names)} "
                             f"({', '.join(ingress_names)}): use --endpoint=NAME=URI")
        if ingress_names[0] in src or one_shot:
            raise UsageError("give the ingress once: --ingress, --endpoint, --bindings or --input")
        src[ingress_names[0]] = parse_uri(args.ingress, "--ingress")
    if args.egress is not None:
        if len(egress_names) != 1:
            raise UsageError(f"--egress binds one endpoint; this graph has {len(egress_names)} "
                             f"({', '.join(egress_names)}): use --endpoint=NAME=URI")
        if egress_names[0] in dst or args.output_file:
            raise UsageError("give the egress once: --egress, --endpoint, --bindings or --output-file")
        dst[egress_names[0]] = parse_uri(args.egress, "--egress")
    return src, dst


def parse_uri_safe(text: str) -> str:
    from ..adapters import redact_uri

    return redact_uri(text)


# ==================================================================================================
# Limits: --max-messages and --idle-exit over every source of the run
# ==================================================================================================


class _Budget:
    def __init__(self, max_messages: int | None, idle_exit: float | None) -> None:
        self.left = max_messages
        self.idle_exit = idle_exit
        self.last_read = time.monotonic()
        self.reason: str | None = None


def _reachable(source: Source) -> bool:
    outage = getattr(source, "outage", None)  # every broker adapter keeps its connection state there
    return outage is None or outage.since is None


class LimitedSource(Source):
    """A source that ends after the run's shared ``--max-messages`` budget is spent, or when no
    source of the run had anything to read for ``--idle-exit`` seconds."""

    def __init__(self, inner: Source, budget: _Budget) -> None:
        self.inner = inner
        self.name = inner.name
        self.budget = budget
        self.acks = inner.acks
        self.waits_for_commit = inner.waits_for_commit

    @property
    def redelivered(self) -> int:  # type: ignore[override]
        return self.inner.redelivered

    def bind(self, ingress: Ingress) -> None:
        self.inner.bind(ingress)

    def open(self) -> None:
        self.inner.open()
        self.budget.last_read = time.monotonic()

    def next_batch(self, max_messages: int) -> Batch | None:
        b = self.budget
        if b.left is not None:
            if b.left <= 0:
                b.reason = b.reason or "max-messages"
                return None
            max_messages = min(max_messages, b.left)
        batch = self.inner.next_batch(max_messages)
        if batch is None:
            return None
        now = time.monotonic()
        if batch.messages:
            b.last_read = now
            if b.left is not None:
                b.left -= len(batch.messages)
        elif not _reachable(self.inner):  # cut off from its broker is not idle: retry_for decides
            b.last_read = now
        elif b.idle_exit is not None and now - b.last_read >= b.idle_exit:
            b.reason = b.reason or "idle-exit"
            return None
        return batch

    def wait(self, timeout: float) -> None:
        self.inner.wait(timeout)

    def commit(self, position: Any) -> None:
        self.inner.commit(position)

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


# ==================================================================================================
# run
# ==================================================================================================


def _run(args: argparse.Namespace) -> int:
    one_shot = run_verb._one_shot(args)
    cfg = run_verb._runtime_config(args)
    session = RunSession(spec_path(args), run_verb.options_from_args(args, cfg))
    with session:
        src_eps, dst_eps = _bindings(args, session)
        sources: dict[str, Source] = {}
        for name in session.ingress:
            ep = src_eps.get(name)
            if ep is not None:
                sources[name] = open_source(ep, input_format=args.input_format)
            elif len(session.ingress) == 1:
                sources[name] = run_verb._source(args, one_shot)
            else:
                raise UsageError(f"ingress endpoint {name!r} is not bound: pass --endpoint={name}=URI")
        sinks: dict[str, Sink] = {name: open_sink(ep, output_format=args.output) for name, ep in dst_eps.items()}
        default_sink: Sink | None = None
        if len(sinks) < len(session.egress):
            default_sink = run_verb._sink(args)
            sinks["*"] = default_sink
        budget = _Budget(args.max_messages, args.idle_exit)
        limited = {name: LimitedSource(src, budget) for name, src in sources.items()}
        with run_verb._Signals() as signals:
            session.start(sinks)
            live = run_verb._Progress(session.stats) if one_shot is None else contextlib.nullcontext()
            with live, contextlib.redirect_stdout(sys.stderr):
                session.run(limited, stop=signals.stop)
            session.stopped_by = signals.name or budget.reason
    summary = session.summary()
    if isinstance(default_sink, CollectSink):
        summary["outputs"] = default_sink.items
    run_verb._finish(args, summary, one_shot is not None)
    return 0
