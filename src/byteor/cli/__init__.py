"""The command line: one verb table shared by the four product entry points.

Each verb lives in its own module under ``byteor.cli`` exposing ``configure(parser)`` and
``run(args) -> int``. Modules are imported only when their verb is used, so ``byteor --help`` and a
quick ``validate`` stay fast. Every :class:`~byteor.ByteorError` becomes its documented exit code and
one readable line per problem on stderr, never a traceback; error lines and log lines pass through
:mod:`byteor._redact` first.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import ByteorError, SpecError
from .._redact import RedactingFilter, scrub

__all__ = ["PRODUCTS", "VERBS", "Verb", "main"]

RUNTIME = "byteor-runtime"
EDGEPLANE = "byteor-edgeplane"
ACTIONGRAPH = "byteor-actiongraph"
DATAGUARD = "byteor-dataguard"
PRODUCTS = (RUNTIME, EDGEPLANE, ACTIONGRAPH, DATAGUARD)
_ALL = frozenset(PRODUCTS)


@dataclass(frozen=True)
class Verb:
    name: str
    module: str
    summary: str
    products: frozenset[str] = _ALL


VERBS: tuple[Verb, ...] = (
    Verb("validate", "spec_verbs", "check a spec against validate_v1; every problem with its key"),
    Verb("describe", "spec_verbs", "summarize a spec (model, hash, stages, lanes); --json, --canonical"),
    Verb("dot", "spec_verbs", "Graphviz DOT of the stage DAG or lane graph; --render out.svg"),
    Verb("diff", "spec_verbs", "field-level semantic diff of two specs (exit 0 equal, 1 different)"),
    Verb("compile", "spec_verbs", "lower a PipelinePlanV2 written in Python to spec.kv and a report"),
    Verb("run", "run", "run a pipeline (--sp for one message in one process)",
         frozenset({RUNTIME, ACTIONGRAPH, DATAGUARD})),
    Verb("run", "edgeplane", "run a pipeline bound to brokers: --ingress/--egress/--endpoint URIs",
         frozenset({EDGEPLANE})),
    Verb("snapshot", "run", "read the live state of a ring or lane graph without touching the hot path"),
    Verb("top", "top", "live view of a running pipeline by name or path: rates, lag, fill, restarts, drops"),
    Verb("console", "console", "local web page of the pipelines on this host: topology, lag, policy, evidence"),
    Verb("doctor", "ops", "check that this host is fit to run a pipeline"),
    Verb("incident-bundle", "ops", "export one directory that captures what ran"),
    Verb("replay", "replay", "replay journal records from a bundle offline, with an audit"),
    Verb("capabilities", "spec_verbs", "stage ops, resolver families, lane kinds, adapters, features"),
    Verb("compatibility", "spec_verbs", "spec format, artifact schema versions, native ABI; --spec: can run?"),
    Verb("approval", "approval", "approval credentials: keygen, issue, verify, hash"),
    Verb("policy", "actiongraph", "print the effective policy table for an environment", frozenset({ACTIONGRAPH})),
    Verb("policy-audit", "actiongraph", "write the policy audit record of a spec", frozenset({ACTIONGRAPH})),
    Verb("redrive", "actiongraph", "re-send failed actions from the dead-letter journal",
         frozenset({ACTIONGRAPH})),
    Verb("encode", "dataguard", "build a USM1 envelope from JSON (prints hex)", frozenset({DATAGUARD})),
    Verb("decode", "dataguard", "decode a USM1 envelope to JSON", frozenset({DATAGUARD})),
    Verb("check", "dataguard", "check a file of envelopes against the registry; writes the report",
         frozenset({DATAGUARD})),
    Verb("redact", "dataguard", "redact a file of envelopes; writes the report", frozenset({DATAGUARD})),
    Verb("fused", "dataguard", "check then redact in one pass; writes the report", frozenset({DATAGUARD})),
)


def _verbs_for(product: str) -> dict[str, Verb]:
    return {v.name: v for v in VERBS if product in v.products}


def _top_help(product: str) -> str:
    verbs = _verbs_for(product)
    width = max(len(n) for n in verbs)
    lines = [
        f"usage: {product} VERB [options]",
        "",
        "Verbs:",
        *(f"  {name.ljust(width)}  {verb.summary}" for name, verb in verbs.items()),
        "",
        f"`{product} VERB --help` explains a verb. Exit codes: 0 ok, 1 runtime failure, 2 usage error,",
        "3 invalid spec, 4 refused by policy, allowlist or approval.",
    ]
    return "\n".join(lines)


def _version() -> str:
    from .._version import distribution_version

    return distribution_version()


def _log_to_stderr() -> None:
    """byteor's warnings go to stderr as plain lines, every one through the redaction filter (a log
    call may interpolate any value: a URL, an exception text)."""
    logger = logging.getLogger("byteor")
    if any(isinstance(f, RedactingFilter) for h in logger.handlers for f in h.filters):
        return
    handler = _StderrHandler()
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)


class _StderrHandler(logging.Handler):
    """Writes each record's message to whatever ``sys.stderr`` is at that moment (as logging's own
    last-resort handler does), so redirections made after the first verb still apply."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a closed or broken stderr must not break the command
            self.handleError(record)


def main(argv: Sequence[str] | None = None, product: str = RUNTIME) -> int:
    """Run one verb of ``product`` and return its exit code.

    A reader that goes away (``| head``) ends the command quietly: what was written is what the
    reader wanted, so there is no traceback, and the exit code is 0 when the command itself
    succeeded until then (1 when the pipe broke in the middle of its output)."""
    try:
        try:
            code = _main(argv, product)
        finally:  # also when argparse exits after --help: its output must not break at exit
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        # silence the interpreter's own flush of stdout at exit as well
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None, product: str) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    verbs = _verbs_for(product)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_top_help(product))
        return 0 if args else 2
    if args[0] == "--version":
        print(f"{product} {_version()}")
        return 0
    name = args[0]
    verb = verbs.get(name)
    if verb is None:
        print(f"{product}: unknown verb {name!r}; `{product} --help` lists the verbs", file=sys.stderr)
        return 2
    _log_to_stderr()
    module = importlib.import_module(f"byteor.cli.{verb.module}")
    parser = argparse.ArgumentParser(prog=f"{product} {name}", description=verb.summary)
    parser.set_defaults(product=product, verb=name)
    module.configure(parser, name)
    try:
        ns = parser.parse_args(args[1:])
        code: int = module.run(ns)
        return code
    except SpecError as exc:
        for line in exc.lines():
            print(f"{product} {name}: {scrub(line)}", file=sys.stderr)
        return exc.exit_code
    except ByteorError as exc:
        print(f"{product} {name}: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{product} {name}: interrupted", file=sys.stderr)
        return 130


def main_runtime() -> None:
    sys.exit(main(product=RUNTIME))


def main_edgeplane() -> None:
    sys.exit(main(product=EDGEPLANE))


def main_actiongraph() -> None:
    sys.exit(main(product=ACTIONGRAPH))


def main_dataguard() -> None:
    sys.exit(main(product=DATAGUARD))
