"""``doctor`` and ``incident-bundle``: is this host fit, and what ran (see docs/operators.md)."""

from __future__ import annotations

import argparse
import os
import sys

from rich.table import Table

from .._errors import UsageError
from ..artifacts.incident import BundleRequest, create_incident_bundle
from ..ops.doctor import DoctorOptions, run_doctor
from ..ops.runtime_config import PROFILES, WAITS, read_runtime_config
from ..spec.kv import load_spec_file
from ._common import (
    add_env_option,
    add_json_option,
    add_spec_option,
    emit_json,
    posture,
    stdout_console,
)

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def configure(parser: argparse.ArgumentParser, verb: str) -> None:
    if verb == "doctor":
        add_spec_option(parser)
        add_json_option(parser)
        add_env_option(parser)
        parser.add_argument(
            "--tuning",
            choices=PROFILES,
            default=None,
            help="the tuning profile to check the host against (default: --config's, else default)",
        )
        parser.add_argument(
            "--wait", choices=WAITS, default=None, help="the wait strategy the pipeline will use"
        )
        parser.add_argument("--config", metavar="FILE", help="runtime_config.txt (tuning, wait, journal dir)")
        parser.add_argument(
            "--journal-dir", metavar="DIR", help="where journal lanes live (default /var/tmp/byteor)"
        )
        parser.add_argument(
            "--approval", metavar="VALUE", help="approval credential (path or value) to check"
        )
        parser.add_argument("--approval-key-set", metavar="FILE", help="signing key set to check")
        return
    add_spec_option(parser)
    add_env_option(parser)
    add_json_option(parser)
    parser.add_argument(
        "--out", metavar="DIR", required=True, help="bundle directory (must not exist or be empty)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--ring-path", metavar="PATH", help="SingleRing ring directory or file to snapshot")
    where.add_argument(
        "--lane-path", metavar="PATH", help="LaneGraph lane directory (state and journal lanes)"
    )
    parser.add_argument("--config", metavar="FILE", help="runtime_config.txt to include")
    parser.add_argument(
        "--journal",
        metavar="LANE=DIR",
        action="append",
        default=[],
        help="copy this journal lane directory into the bundle (repeatable)",
    )
    parser.add_argument("--journal-dir", metavar="DIR",
                        help="where the run kept its journals (run --journal-dir): journal lanes, and a "
                             "SingleRing run's ingress journal <DIR>/<ingress>")
    parser.add_argument("--dead-letter", metavar="DIR",
                        help="the dead-letter journal to include (default: dead-letter/ next to the spec)")
    parser.add_argument("--tar", action="store_true", help="write one DIR.tar.gz instead of a directory")
    parser.add_argument(
        "--pid",
        metavar="PID",
        type=int,
        help="describe this process in environment.json (e.g. a pipeline process) instead of the bundler",
    )
    parser.add_argument(
        "--redact-rules", metavar="FILE", help="DataGuard rules applied to the bundle's JSON files"
    )


def run(args: argparse.Namespace) -> int:
    if args.verb == "doctor":
        return _doctor(args)
    return _bundle(args)


def _doctor(args: argparse.Namespace) -> int:
    spec = None
    spec_path = (
        getattr(args, "spec", None) or getattr(args, "spec_pos", None) or os.environ.get("BYTEOR_SPEC")
    )
    if spec_path:
        spec = load_spec_file(spec_path)
    config = read_runtime_config(args.config) if args.config else None
    tuning = args.tuning or (config.tuning if config and config.tuning else "default")
    opts = DoctorOptions(
        spec=spec,
        spec_path=spec_path,
        tuning=tuning,
        wait=args.wait or (config.wait if config else None),
        posture=posture(args),
        journal_dir=args.journal_dir or (config.journal_dir if config else None),
        journal_fsync=config.journal_fsync if config else None,
        approval=args.approval,
        key_set=args.approval_key_set,
    )
    report = run_doctor(opts)
    if args.json:
        emit_json(report.to_json())
    else:
        console = stdout_console()
        table = Table(title=f"byteor doctor (tuning {tuning})", show_lines=False)
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col, overflow="fold")
        for c in report.checks:
            table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.detail, c.fix)
        console.print(table)
        knobs = Table(title=f"tuning profile {tuning}, applied in a child process")
        for col in ("knob", "requested", "applied", "state", "reason"):
            knobs.add_column(col, overflow="fold")
        for k in report.knobs:
            knobs.add_row(k.knob, k.requested, k.applied, k.state, k.reason)
        console.print(knobs)
        n = report.counts()
        console.print(f"{n['pass']} pass, {n['warn']} warn, {n['fail']} fail")
    return 0 if report.ok else 1


def _journals(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        lane, sep, path = value.partition("=")
        if not sep or not lane or not path:
            raise UsageError(f"--journal={value!r}: expected LANE=DIR")
        out[lane] = path
    return out


def _bundle(args: argparse.Namespace) -> int:
    spec_path = (
        getattr(args, "spec", None) or getattr(args, "spec_pos", None) or os.environ.get("BYTEOR_SPEC")
    )
    if not spec_path:
        raise UsageError("no spec given: pass --spec=PATH or a positional path, or set BYTEOR_SPEC")
    req = BundleRequest(
        spec_path=spec_path,
        out=args.out,
        ring_path=args.ring_path,
        lane_path=args.lane_path,
        config_path=args.config,
        journal_dirs=_journals(args.journal),
        journal_root=args.journal_dir,
        dead_letter_dir=args.dead_letter,
        posture=posture(args),
        tar=args.tar,
        redact_rules=args.redact_rules,
        pid=args.pid,
    )
    tty = sys.stderr.isatty() and not args.json
    result = create_incident_bundle(
        req, progress=(lambda step: print(f"incident-bundle: {step}", file=sys.stderr)) if tty else None
    )
    if args.json:
        emit_json(
            {
                "path": str(result.path),
                "spec_ok": result.spec_ok,
                "spec_sha256": result.spec_sha256,
                "files": [{"name": e.name, "bytes": e.bytes, "sha256": e.sha256} for e in result.files],
                "absent": result.absent,
            }
        )
        return 0
    console = stdout_console()
    table = Table(title=f"incident bundle {result.path}")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    table.add_column("sha256", overflow="fold")
    for e in result.files:
        table.add_row(e.name, str(e.bytes), e.sha256)
    console.print(table)
    for name, why in result.absent.items():
        console.print(f"absent: {name}: {why}")
    verdict = "valid" if result.spec_ok else "INVALID (see spec_validation.json)"
    console.print(f"spec {verdict}; {len(result.files)} file(s) written to {result.path}")
    return 0
