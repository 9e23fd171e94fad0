"""``approval``: credentials bound to a spec hash. ``hash`` prints the spec hash alone on one line."""

from __future__ import annotations

import argparse

from ._common import add_spec_option, load_spec


def configure(parser: argparse.ArgumentParser, verb: str) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p_hash = sub.add_parser("hash", help="print the spec hash (sha256:<hex> of the canonical KV)")
    add_spec_option(p_hash)


def run(args: argparse.Namespace) -> int:
    if args.action == "hash":
        loaded = load_spec(args, validate=False)
        print(loaded.hash)
        return 0
    raise AssertionError(f"unhandled approval action {args.action}")
