"""``byteor-actiongraph`` verbs: ``policy`` (the effective decision table), ``policy-audit`` (write the
policy audit record) and ``redrive`` (re-send dead-lettered actions under a fresh decision)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .._errors import SpecError, UsageError
from ._common import (
    add_env_option,
    add_json_option,
    add_spec_option,
    emit_json,
    load_spec,
    posture,
    spec_path,
    stdout_console,
)

_STYLE = {"Allow": "green", "DryRunOnly": "cyan", "RequireApproval": "yellow", "Deny": "bold red"}


def _approval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--approval", metavar="PATH|CRED",
                        help="approval credential file or value (default: approval.cred next to the spec)")
    parser.add_argument("--approval-key-set", metavar="FILE",
                        help="trusted signing keys (default: signing_keys.json next to the spec)")
    parser.add_argument("--policy-file", metavar="FILE",
                        help="operator policy file (default: $BYTEOR_POLICY_FILE, else the built-in table)")
    parser.add_argument("--dry-run", action="store_true", help="decide as for a --dry-run run")


def configure(parser: argparse.ArgumentParser, verb: str) -> None:
    add_spec_option(parser)
    add_env_option(parser)
    if verb == "policy":
        _approval_options(parser)
        parser.add_argument("--replay-mode", choices=("dry_run", "execute"), default=None,
                            help="decide as for a replay in this mode")
        add_json_option(parser)
    elif verb == "policy-audit":
        _approval_options(parser)
        parser.add_argument("--out", required=True, metavar="FILE", help="where to write policy_audit.json")
        add_json_option(parser)
    elif verb == "redrive":
        _approval_options(parser)
        parser.add_argument("--dead-letter", required=True, metavar="DIR", help="the dead-letter directory")
        add_json_option(parser)
    else:  # pragma: no cover - the verb table only routes the three verbs here
        raise UsageError(f"unknown actiongraph verb {verb!r}")


def run(args: argparse.Namespace) -> int:
    if args.verb == "policy":
        return _policy(args)
    if args.verb == "policy-audit":
        return _policy_audit(args)
    if args.verb == "redrive":
        return _redrive(args)
    raise UsageError(f"unknown actiongraph verb {args.verb!r}")


def _evaluate(args: argparse.Namespace, *, replay_mode: str | None = None) -> Any:
    from ..policy.gate import evaluate_run

    loaded = load_spec(args)
    return loaded, evaluate_run(loaded.spec, spec_path=loaded.path, spec_hash=loaded.hash,
                                posture=posture(args), dry_run=args.dry_run, approval=args.approval,
                                key_set=args.approval_key_set, replay_mode=replay_mode,
                                policy_file=args.policy_file)


def _policy(args: argparse.Namespace) -> int:
    from rich.table import Table

    loaded, gate = _evaluate(args, replay_mode=args.replay_mode)
    rules = gate.table.rules(gate.posture)
    if args.json:
        emit_json({"spec": loaded.path, **gate.to_json(), "rules": rules.to_json(),
                   "table": gate.table.to_json()["postures"]})
        return 0
    con = stdout_console()
    con.print(f"posture [bold]{gate.posture}[/]  policy {gate.table.source}  spec {loaded.hash}"
              + ("  (--dry-run)" if args.dry_run else "")
              + (f"  (replay {args.replay_mode})" if args.replay_mode else ""))
    rules_table = Table(title="rules by posture")
    for col in ("posture", "http_post", "exec", "replay", "replay_execute"):
        rules_table.add_column(col)
    for name, r in gate.table.postures.items():
        mark = "[bold]" if name == gate.posture else ""
        rules_table.add_row(f"{mark}{name}", r.rule_for("http_post"), r.rule_for("exec"), r.replay,
                            r.replay_execute)
    con.print(rules_table)
    if gate.approval is not None:
        a = gate.approval.payload
        con.print(f"approval {a.approval_id} verified (key {a.kid}, expires {a.expires_at})")
    elif gate.approval_error is not None:
        con.print(f"[red]approval not verified[/]: {gate.approval_error}")
    if not gate.decisions:
        con.print("no side-effecting stages: nothing to decide")
        return 0
    table = Table(title="side-effecting stages")
    for col in ("#", "stage", "key", "decision", "reason"):
        table.add_column(col, overflow="fold")
    for d in gate.decisions:
        table.add_row(str(d.index), d.name, d.key, f"[{_STYLE[d.decision]}]{d.decision}[/]", d.reason)
    con.print(table)
    return 0


def _policy_audit(args: argparse.Namespace) -> int:
    from ..policy.audit import policy_audit_record, write_policy_audit

    path = spec_path(args)
    env = posture(args)
    decisions = None
    try:
        _, gate = _evaluate(args)
        decisions = gate.decisions
    except SpecError:
        pass  # the record itself says why the spec does not parse or validate
    record = policy_audit_record(path, mode=env, enforced=False, decisions=decisions)
    write_policy_audit(args.out, record)
    if args.json:
        emit_json(record)
    else:
        con = stdout_console()
        con.print(f"wrote {args.out}: ok={str(record['ok']).lower()} mode={env}"
                  + (f" ({len(decisions)} side-effecting stage(s))" if decisions is not None else "")
                  + (f"; error: {record['error']}" if "error" in record else ""))
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from ..actions.deadletter import DeadLetterJournal
    from ..actions.redrive import RedriveOutcome, redrive
    from ..policy.gate import gate_run

    if not os.path.isdir(args.dead_letter):
        raise UsageError(f"{args.dead_letter}: dead-letter directory does not exist")
    loaded = load_spec(args)
    gate = gate_run(loaded.spec, spec_path=loaded.path, spec_hash=loaded.hash, posture=posture(args),
                    dry_run=args.dry_run, approval=args.approval, key_set=args.approval_key_set,
                    policy_file=args.policy_file)
    journal = DeadLetterJournal(args.dead_letter, create=False)
    con = stdout_console()

    def show(out: RedriveOutcome) -> None:
        if not args.json:
            style = {"delivered": "green", "failed": "bold red", "dry_run": "cyan"}.get(out.outcome, "yellow")
            con.print(f"[{style}]{out.outcome:9}[/] {out.id}  {out.target}  {out.detail}")

    outcomes = redrive(journal, gate.context, progress=show)
    counts = {k: sum(1 for o in outcomes if o.outcome == k)
              for k in ("delivered", "failed", "dry_run", "skipped")}
    if args.json:
        emit_json({"dead_letter": args.dead_letter, "spec_hash": loaded.hash, "posture": gate.posture,
                   "counts": counts, "records": [o.to_json() for o in outcomes]})
    else:
        con.print(", ".join(f"{n} {k}" for k, n in counts.items()) if outcomes else "nothing to redrive")
    return 1 if counts["failed"] else 0
