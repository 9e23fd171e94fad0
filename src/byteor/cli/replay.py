"""``replay``: run journal records from an incident bundle offline, dry-run first, with an audit."""

from __future__ import annotations

import argparse
import sys

from rich.table import Table

from ..replay import MODES, ReplayRequest, run_replay
from ._common import add_env_option, add_json_option, emit_json, posture, stdout_console


def configure(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--bundle", metavar="DIR", required=True, help="incident bundle directory or .tar.gz")
    parser.add_argument("--journal-lane", metavar="NAME", required=True, help="journal lane to replay from")
    parser.add_argument("--last-n", metavar="N", type=int, required=True, help="replay the last N records")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="dry_run",
        help="dry_run (default): record every action, perform none; execute: perform allowed ones",
    )
    add_env_option(parser)
    parser.add_argument(
        "--approval",
        metavar="VALUE",
        help="approval credential (path or value; default approval.cred next to the bundle's spec.kv)",
    )
    parser.add_argument(
        "--approval-key-set",
        metavar="FILE",
        help="trusted signing keys (default signing_keys.json next to the bundle's spec.kv)",
    )
    parser.add_argument(
        "--policy-file", metavar="FILE", help="operator policy file (default $BYTEOR_POLICY_FILE)"
    )
    parser.add_argument(
        "--out", metavar="FILE", required=True, help="replay audit JSON to create (never overwritten)"
    )
    parser.add_argument(
        "--max-actions",
        metavar="N",
        type=int,
        default=None,
        help="stop after N actions (default 10000; can only be lowered)",
    )
    parser.add_argument(
        "--max-bytes",
        metavar="N",
        type=int,
        default=None,
        help="stop after N bytes of input (default 128 MiB; can only be lowered)",
    )
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    req = ReplayRequest(
        bundle=args.bundle,
        journal_lane=args.journal_lane,
        last_n=args.last_n,
        mode=args.mode,
        posture=posture(args),
        out=args.out,
        approval=args.approval,
        key_set=args.approval_key_set,
        max_actions=args.max_actions,
        max_bytes=args.max_bytes,
        policy_file=args.policy_file,
    )
    tty = sys.stderr.isatty() and not args.json

    def progress(done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            print(f"\rreplay: {done}/{total} record(s)", end="\n" if done == total else "", file=sys.stderr)

    result = run_replay(req, progress=progress if tty else None)
    audit = result.audit
    suppressed = sum(1 for a in audit.actions if a.decision == "DryRunOnly")
    if audit.policy.mode == "execute" and suppressed:
        # The policy may narrow execute to a dry run (DryRunOnly is a decision, not a refusal); say so
        # on stderr so nobody mistakes an exit 0 for delivered side effects.
        print(f"replay: execute mode asked, but the policy for {audit.policy.env} made {suppressed} "
              "action(s) DryRunOnly: they were recorded, not performed", file=sys.stderr)
    if args.json:
        emit_json(
            {"audit_path": str(result.audit_path), "outputs": len(result.outputs), "audit": audit.to_json()}
        )
        return 0
    console = stdout_console()
    table = Table(
        title=f"replay {audit.policy.mode} of {audit.input.journal_lane} (posture {audit.policy.env})"
    )
    for col in ("role", "action", "target", "decision"):
        table.add_column(col, overflow="fold")
    counts: dict[tuple[str, str, str, str], int] = {}
    for a in audit.actions:
        k = (a.role, a.action, a.target, a.decision)
        counts[k] = counts.get(k, 0) + 1
    for (role, action, target, decision), n in counts.items():
        table.add_row(role, f"{action} x{n}", target, decision)
    console.print(table)
    console.print(
        f"{audit.input.scanned_records} record(s) scanned, {len(audit.input.sample_sha256)} selected "
        f"({audit.input.selected_bytes} bytes), {len(audit.actions)} action(s), "
        f"{len(result.outputs)} output(s); "
        f"audit written to {result.audit_path}"
    )
    return 0
