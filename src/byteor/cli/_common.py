"""Helpers every verb module shares: the spec argument, the environment posture, output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import UsageError
from ..spec.kv import load_spec_file, spec_hash
from ..spec.model import PipelineSpecV1

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "POSTURES",
    "LoadedSpec",
    "add_env_option",
    "add_json_option",
    "add_spec_option",
    "emit_json",
    "load_spec",
    "posture",
    "spec_path",
    "stdout_console",
]

POSTURES = ("dev", "staging", "prod")


def add_spec_option(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """``--spec=PATH``, or the first positional argument, or ``$BYTEOR_SPEC``."""
    parser.add_argument("--spec", metavar="PATH", help="the spec.kv file (default: positional, or $BYTEOR_SPEC)")
    if positional:
        parser.add_argument("spec_pos", nargs="?", metavar="SPEC", help="the spec.kv file")


def spec_path(args: argparse.Namespace) -> str:
    path = getattr(args, "spec", None) or getattr(args, "spec_pos", None) or os.environ.get("BYTEOR_SPEC")
    if not path:
        raise UsageError("no spec given: pass --spec=PATH or a positional path, or set BYTEOR_SPEC")
    return str(path)


@dataclass(frozen=True)
class LoadedSpec:
    path: str
    spec: PipelineSpecV1
    hash: str


def load_spec(args: argparse.Namespace, *, validate: bool = True) -> LoadedSpec:
    """Read, decode and (by default) validate the spec the command line names.

    Missing file: :class:`UsageError` (exit 2). Undecodable or invalid: :class:`SpecError` (exit 3).
    """
    path = spec_path(args)
    spec = load_spec_file(path)
    if validate:
        from ..spec.validate import check_v1

        check_v1(spec, path=path)
    return LoadedSpec(path, spec, spec_hash(spec))


def add_env_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", choices=POSTURES, default=None,
                        help="environment posture (default: $BYTEOR_ENV, else dev)")


def posture(args: argparse.Namespace) -> str:
    value = getattr(args, "env", None) or os.environ.get("BYTEOR_ENV") or "dev"
    if value not in POSTURES:
        raise UsageError(f"BYTEOR_ENV={value!r} is not one of {', '.join(POSTURES)}")
    return str(value)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def stdout_console() -> Console:
    """A rich console on stdout; plain text (no colour codes) when stdout is not a terminal."""
    from rich.console import Console  # here: a run that prints no table never pays for the import

    return Console(highlight=False, soft_wrap=True)
