"""``byteor-dataguard`` verbs: ``encode``, ``decode``, ``check``, ``redact``, ``fused`` (docs/dataguard.md).

``encode`` prints a USM1 envelope as hex; ``decode`` prints ``{"header": ..., "payload": ...}`` (a
malformed envelope exits 1 naming the error class). ``check``/``redact``/``fused`` stream a file of
envelopes (``hex``: one per line; ``len32``: u32 little-endian length before each) through the engine,
write the forwarded envelopes to ``--output`` in the input's format, the report KV v1 to ``--report``,
and exit 0 whatever was rejected; exit 2 when the registry cannot serve the required tuple or a rule
is malformed. ``byteor-dataguard run`` is the shared ``run`` verb with a ``dataguard:<profile>`` stage.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections.abc import Iterator
from typing import IO, Any

from .._errors import DataGuardError, UsageError
from .._fileio import file_mode
from ..dataguard import codecs
from ..dataguard.engine import DROP, FORWARD_INPUT, DataGuard, GuardConfig
from ..dataguard.envelope import CODEC_IDS, CODEC_NAMES, decode, encode
from ..dataguard.errors import CodecError, EnvelopeError, RegistryError
from ..dataguard.registry import Registry
from ..dataguard.report import COUNTERS, write_report
from ..dataguard.rules import DEFAULT_HASH_KEY_ENV, RuleSet, load_rules_file, parse_rules
from ._common import emit_json, stdout_console

__all__ = ["configure", "run"]

_LEN32 = struct.Struct("<I")
_PROGRESS_EVERY = 8192


def _u(bits: int, name: str) -> Any:
    limit = 2**bits - 1

    def parse(text: str) -> int:
        if not text.isdigit() or not text.isascii() or int(text) > limit:
            raise argparse.ArgumentTypeError(f"{name} must be an integer in 0..{limit}, got {text!r}")
        return int(text)

    return parse


def _count(text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def configure(parser: argparse.ArgumentParser, verb: str) -> None:
    if verb == "encode":
        parser.add_argument("--schema-id", type=_u(64, "--schema-id"), required=True)
        parser.add_argument("--msg-type", type=_u(32, "--msg-type"), required=True)
        parser.add_argument("--msg-version", type=_u(16, "--msg-version"), required=True)
        parser.add_argument("--mode", choices=tuple(CODEC_IDS), required=True)
        parser.add_argument("--json", dest="json_obj", required=True, metavar="OBJECT",
                            help='payload as a JSON object; bytes values as {"hex": "..."}')
        parser.add_argument("--registry-root", metavar="DIR",
                            help="check the object against the schema (required for --mode=row: field order)")
        return
    if verb == "decode":
        parser.add_argument("--input-hex", required=True, metavar="HEX")
        parser.add_argument("--registry-root", metavar="DIR",
                            help="name row fields (and check types) from the registry")
        return
    parser.add_argument("--registry-root", required=True, metavar="DIR")
    parser.add_argument("--schema-id", type=_u(64, "--schema-id"), required=True)
    parser.add_argument("--msg-type", type=_u(32, "--msg-type"), required=True)
    parser.add_argument("--required-version", type=_u(16, "--required-version"), required=True)
    parser.add_argument("--mode", choices=tuple(CODEC_IDS), required=True)
    if verb != "check":
        parser.add_argument("--rule", action="append", default=[], metavar="SPEC",
                            help="FIELD:drop | FIELD:replace_with=V | FIELD:hash | FIELD:mask=P:S:C | "
                                 "FIELD:truncate=N (repeatable)")
        parser.add_argument("--rules-file", "--policy", dest="rules_file", metavar="FILE",
                            help="more rules: one per line (# comments), or JSON list / {\"rules\": [...]}")
        parser.add_argument("--hash-key-env", metavar="NAME", default=None,
                            help=f"key `hash` with HMAC-SHA256 from this variable (default: "
                                 f"{DEFAULT_HASH_KEY_ENV} when set; naming one makes it required)")
    parser.add_argument("--on-reject", choices=("drop", "forward_input"), default="drop",
                        help="what happens to a rejected message (default drop)")
    parser.add_argument("--input", required=True, metavar="FILE")
    parser.add_argument("--input-format", choices=("hex", "len32"), default="hex")
    parser.add_argument("--output", metavar="FILE", help="forwarded envelopes, in the input's format")
    parser.add_argument("--report", required=True, metavar="FILE", help="the report KV v1")
    parser.add_argument("--cost-sample", type=_count, default=0, metavar="N",
                        help="time every Nth message; adds cost.* to the report")
    parser.add_argument("--json", action="store_true", help="print the counters as JSON")


def run(args: argparse.Namespace) -> int:
    if args.verb == "encode":
        return _encode(args)
    if args.verb == "decode":
        return _decode(args)
    return _process(args)


# --------------------------------------------------------------------------- encode / decode


def _encode(args: argparse.Namespace) -> int:
    try:
        obj = json.loads(args.json_obj)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--json is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise UsageError("--json must be a JSON object")
    values = {k: _value(v, f"--json field {k!r}") for k, v in obj.items()}
    schema = None
    if args.registry_root:
        schema = Registry(args.registry_root).get(args.schema_id, args.msg_type, args.msg_version)
        if schema is None:
            raise RegistryError(f"registry {args.registry_root!r} has no schema "
                                f"{args.schema_id}/{args.msg_type}/v{args.msg_version}")
        if schema.codec != args.mode:
            raise RegistryError(f"{schema.path}: codec is {schema.codec!r}, not --mode={args.mode}")
        for name, value in values.items():
            f = schema.field(name)
            if f is None:
                raise UsageError(f"--json field {name!r} is not in {schema.path}")
            if codecs.tag_of(value) != f.tag:
                raise UsageError(f"--json field {name!r} must be {f.type} ({schema.path})")
        missing = [f.name for f in schema.fields if f.required and f.name not in values]
        if missing:
            raise UsageError(f"--json lacks required field {missing[0]!r} ({schema.path})")
    elif args.mode == "row":
        raise UsageError("--mode=row needs --registry-root: a row payload follows the schema's field order")
    try:
        if args.mode == "row":
            assert schema is not None
            payload = codecs.encode_row(schema.pairs(), values)
        else:
            payload = codecs.encode_mapkv(values)
        env = encode(payload, codec_id=CODEC_IDS[args.mode], schema_id=args.schema_id,
                     msg_type=args.msg_type, msg_version=args.msg_version)
    except CodecError as exc:
        raise UsageError(f"--json: {exc}") from None
    print(env.hex())
    return 0


def _value(v: Any, where: str) -> codecs.Value:
    try:
        return codecs.value_from_json(v, where)
    except CodecError as exc:
        raise UsageError(str(exc)) from None


def _decode(args: argparse.Namespace) -> int:
    text = args.input_hex.strip()
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise UsageError("--input-hex is not valid hex") from None
    try:
        header, payload = decode(data)
        if header.codec_id == CODEC_IDS["mapkv"]:
            body: Any = {k: codecs.value_to_json(v) for k, v in codecs.decode_mapkv(payload).items()}
        elif header.codec_id == CODEC_IDS["row"]:
            body = _decode_row(args, header.schema_id, header.msg_type, header.msg_version, payload)
        else:
            raise CodecError(f"codec_id {header.codec_id} is neither 1 (mapkv) nor 2 (row)")
    except (EnvelopeError, CodecError) as exc:
        raise DataGuardError(f"{type(exc).__name__}: {exc}") from None
    head: dict[str, Any] = header.as_json()
    head["codec"] = CODEC_NAMES.get(header.codec_id, "unknown")
    emit_json({"header": head, "payload": body})
    return 0


def _decode_row(args: argparse.Namespace, schema_id: int, msg_type: int, version: int,
                payload: memoryview) -> Any:
    """With a registry: an object by field name; without: the list of values in wire order."""
    if args.registry_root:
        schema = Registry(args.registry_root).get(schema_id, msg_type, version)
        if schema is None:
            raise RegistryError(f"registry {args.registry_root!r} has no schema "
                                f"{schema_id}/{msg_type}/v{version}")
        return {k: codecs.value_to_json(v) for k, v in codecs.decode_row(schema.pairs(), payload).items()}
    return [codecs.value_to_json(v) for v in codecs.decode_values(payload)]


# --------------------------------------------------------------------------- check / redact / fused


def _rules(args: argparse.Namespace) -> RuleSet:
    if args.verb == "check":
        return RuleSet([])
    rules = parse_rules(args.rule)
    if args.rules_file:
        rules += load_rules_file(args.rules_file)
    env_name = args.hash_key_env or DEFAULT_HASH_KEY_ENV
    return RuleSet(rules, hash_key_env=env_name, hash_key_required=args.hash_key_env is not None)


def _read_records(fh: IO[bytes], fmt: str, path: str) -> Iterator[bytes]:
    if fmt == "hex":
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            try:
                yield bytes.fromhex(text.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise UsageError(f"{path}: line {lineno} is not hex") from None
        return
    offset = 0
    while True:
        head = fh.read(4)
        if not head:
            return
        if len(head) < 4:
            raise UsageError(f"{path}: truncated len32 prefix at byte {offset}")
        (n,) = _LEN32.unpack(head)
        body = fh.read(n)
        if len(body) < n:
            raise UsageError(f"{path}: len32 record at byte {offset} says {n} bytes, {len(body)} remain")
        yield body
        offset += 4 + n


def _process(args: argparse.Namespace) -> int:
    rules = _rules(args)
    guard = DataGuard(GuardConfig(
        registry_root=args.registry_root, schema_id=args.schema_id, msg_type=args.msg_type,
        required_version=args.required_version, mode=args.mode, flow=args.verb, rules=rules,
        on_reject=args.on_reject, cost_sample=args.cost_sample))
    if not os.path.isfile(args.input):
        raise UsageError(f"--input {args.input!r} does not exist")
    out_fh: IO[bytes] | None = None
    fmt = args.input_format
    progress = _Progress(enabled=sys.stderr.isatty() and not args.json)
    out = bytearray(guard.config.capacity)
    try:
        if args.output:
            # private like every file byteor writes; the operator named this path, so a link is followed
            out_fh = os.fdopen(os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                       file_mode()), "wb")
        with open(args.input, "rb") as in_fh:
            for i, record in enumerate(_read_records(in_fh, fmt, args.input), 1):
                n = guard.process_into(record, out)
                if out_fh is not None and n != DROP:
                    data = record if n == FORWARD_INPUT else out[:n]
                    if fmt == "hex":
                        out_fh.write(data.hex().encode("ascii") + b"\n")
                    else:
                        out_fh.write(_LEN32.pack(len(data)))
                        out_fh.write(data)
                if i % _PROGRESS_EVERY == 0:
                    progress.update(i)
    except OSError as exc:
        raise UsageError(f"{exc.filename}: {exc.strerror}") from None
    finally:
        progress.done()
        if out_fh is not None:
            out_fh.close()
    report = guard.report()
    write_report(args.report, report)
    if args.json:
        emit_json({"flow": args.verb, "counts": report.counts, "report": os.path.abspath(args.report)})
    else:
        _print_summary(args, report.counts)
    return 0


class _Progress:
    """A single updating line on stderr when it is a terminal (messages processed so far)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False

    def update(self, n: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\rdataguard: {n} messages")
            sys.stderr.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def _print_summary(args: argparse.Namespace, counts: dict[str, int]) -> None:
    from rich.table import Table

    table = Table(title=f"DataGuard {args.verb}: {args.input}", title_justify="left")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name in COUNTERS:
        table.add_row(f"counts.{name}", str(counts[name]))
    console = stdout_console()
    console.print(table)
    console.print(f"report written to {args.report}")
