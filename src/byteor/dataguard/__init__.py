"""DataGuard: USM1 envelopes, mapkv/row codecs, a file-backed schema registry, deterministic
redaction rules, a check/redact/fused engine and its report KV v1. See ``docs/dataguard.md``.
"""

from __future__ import annotations

from .engine import DROP, FLOWS, FORWARD_INPUT, ON_REJECT, DataGuard, GuardConfig
from .envelope import CODEC_IDS, MAGIC, V1_HEADER_LEN, Header, decode, decode_header, encode, encode_into
from .errors import (
    BadHeaderLen,
    BadMagic,
    BadPayloadLen,
    BufferTooSmall,
    CodecError,
    DataGuardError,
    EnvelopeError,
    RegistryError,
    RuleError,
    UnknownFlags,
)
from .registry import FieldDef, Registry, Schema
from .report import DataGuardReport, parse_report_kv, render_report_kv, write_report
from .rules import Rule, RuleSet, load_rules_file, parse_rule, parse_rules, redact_json_artifact

__all__ = [
    "CODEC_IDS",
    "DROP",
    "FLOWS",
    "FORWARD_INPUT",
    "MAGIC",
    "ON_REJECT",
    "V1_HEADER_LEN",
    "BadHeaderLen",
    "BadMagic",
    "BadPayloadLen",
    "BufferTooSmall",
    "CodecError",
    "DataGuard",
    "DataGuardError",
    "DataGuardReport",
    "EnvelopeError",
    "FieldDef",
    "GuardConfig",
    "Header",
    "Registry",
    "RegistryError",
    "Rule",
    "RuleError",
    "RuleSet",
    "Schema",
    "UnknownFlags",
    "decode",
    "decode_header",
    "encode",
    "encode_into",
    "load_rules_file",
    "parse_report_kv",
    "parse_rule",
    "parse_rules",
    "redact_json_artifact",
    "render_report_kv",
    "write_report",
]
