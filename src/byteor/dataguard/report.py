"""The DataGuard report, KV v1: what a run saw, accepted, rejected (and why) and redacted.

UTF-8, one ``key=value`` per line, ``\\n`` after every line, keys in this order::

    report.v=1
    report.kind=dataguard
    report.flow=check|redact|fused
    schema.registry_root=<path>
    schema.schema_id=<u64>
    schema.msg_type=<u32>
    schema.required_version=<u16>
    schema.selected_version=<u16>      lowest registered version >= required (chosen at startup)
    schema.mode=mapkv|row
    expected.codec_id=<u16>             1 mapkv, 2 row
    policy.active=true|false            whether any redaction rule was in force
    policy.on_reject=drop|forward_input
    policy.hash_keyed=true|false        hash used HMAC with a key from the environment
    policy.hash_key_env=<NAME>          only when keyed: the variable's name, never its value
    policy.rule_count=<n>
    policy.rules.<i>=<rule as written>
    counts.seen / accepted / rejected / decode_err / codec_mismatch / schema_missing /
    counts.schema_incompatible / redact_overflow / out_drop / out_forward_input / out_forward_output /
    counts.redact_noop
    counts.rule.<i>.applied=<n>         values rule i changed (or dropped)
    counts.rule.<i>.noop=<n>            values rule i left as they were
    cost.sample_every=<N>               only with --cost-sample=N: every Nth message is timed
    cost.samples / cost.ns_total / cost.ns_avg / cost.ns_max / cost.bytes_in / cost.bytes_out

Invariants: ``seen = accepted + rejected``;
``rejected = decode_err + codec_mismatch + schema_missing + schema_incompatible + redact_overflow``;
``seen = out_drop + out_forward_input + out_forward_output``; ``redact_noop`` = sum of rule noops.

:func:`parse_report_kv` reads it back: ``report.v`` newer than 1 or a missing required key is an
:class:`~byteor.ArtifactError`; keys it does not know are kept in ``extra`` (additive fields).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .._errors import ArtifactError
from .._fileio import write_text_atomic
from .._schemas import SCHEMA_VERSIONS

__all__ = [
    "COST_KEYS",
    "COUNTERS",
    "DataGuardReport",
    "parse_report_kv",
    "render_report_kv",
    "write_report",
]

REPORT_VERSION = SCHEMA_VERSIONS["dataguard_report"]
COUNTERS = (
    "seen", "accepted", "rejected", "decode_err", "codec_mismatch", "schema_missing",
    "schema_incompatible", "redact_overflow", "out_drop", "out_forward_input", "out_forward_output",
    "redact_noop",
)
COST_KEYS = ("samples", "ns_total", "ns_avg", "ns_max", "bytes_in", "bytes_out")


@dataclass
class DataGuardReport:
    flow: str
    registry_root: str
    schema_id: int
    msg_type: int
    required_version: int
    selected_version: int
    mode: str
    expected_codec_id: int
    on_reject: str = "drop"
    rules: list[str] = field(default_factory=list)
    hash_keyed: bool = False
    hash_key_env: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    rule_counts: list[tuple[int, int]] = field(default_factory=list)
    cost_sample_every: int = 0
    cost: dict[str, int] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


def _b(v: bool) -> str:
    return "true" if v else "false"


def render_report_kv(r: DataGuardReport) -> str:
    """The report as KV v1 text (see the module docstring for the key order)."""
    for text in (r.registry_root, *r.rules):
        if "\n" in text:
            raise ArtifactError(f"report value {text!r} contains a newline")
    lines = [
        f"report.v={REPORT_VERSION}",
        "report.kind=dataguard",
        f"report.flow={r.flow}",
        f"schema.registry_root={r.registry_root}",
        f"schema.schema_id={r.schema_id}",
        f"schema.msg_type={r.msg_type}",
        f"schema.required_version={r.required_version}",
        f"schema.selected_version={r.selected_version}",
        f"schema.mode={r.mode}",
        f"expected.codec_id={r.expected_codec_id}",
        f"policy.active={_b(bool(r.rules))}",
        f"policy.on_reject={r.on_reject}",
        f"policy.hash_keyed={_b(r.hash_keyed)}",
    ]
    if r.hash_keyed:
        lines.append(f"policy.hash_key_env={r.hash_key_env}")
    lines.append(f"policy.rule_count={len(r.rules)}")
    lines += [f"policy.rules.{i}={text}" for i, text in enumerate(r.rules)]
    lines += [f"counts.{name}={r.counts.get(name, 0)}" for name in COUNTERS]
    for i, (applied, noop) in enumerate(r.rule_counts):
        lines += [f"counts.rule.{i}.applied={applied}", f"counts.rule.{i}.noop={noop}"]
    if r.cost_sample_every:
        lines.append(f"cost.sample_every={r.cost_sample_every}")
        lines += [f"cost.{k}={r.cost.get(k, 0)}" for k in COST_KEYS]
    lines += [f"{k}={v}" for k, v in r.extra.items()]
    return "".join(line + "\n" for line in lines)


def write_report(path: str | os.PathLike[str], r: DataGuardReport) -> None:
    """Write the report atomically (a temporary file in the same directory, then rename)."""
    write_text_atomic(path, render_report_kv(r), make_dirs=True)


def _int(kv: dict[str, str], key: str, where: str) -> int:
    if key not in kv:
        raise ArtifactError(f"{where}: missing key {key}")
    v = kv.pop(key)
    if not v.isdigit() or not v.isascii():
        raise ArtifactError(f"{where}: {key}={v!r} is not a non-negative integer")
    return int(v)


def _bool(kv: dict[str, str], key: str, where: str) -> bool:
    v = kv.pop(key, "false")
    if v not in ("true", "false"):
        raise ArtifactError(f"{where}: {key}={v!r} is not true/false")
    return v == "true"


def parse_report_kv(text: str, *, where: str = "dataguard report") -> DataGuardReport:
    """Parse KV v1 text back into a :class:`DataGuardReport` (errors name the key)."""
    kv: dict[str, str] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ArtifactError(f"{where}: line {lineno} has no '='")
        if key in kv:
            raise ArtifactError(f"{where}: line {lineno}: duplicate key {key}")
        kv[key] = value
    version = _int(kv, "report.v", where)
    if version > REPORT_VERSION:
        raise ArtifactError(f"{where}: report.v={version} is newer than this reader ({REPORT_VERSION})")
    kind = kv.pop("report.kind", None)
    if kind != "dataguard":
        raise ArtifactError(f"{where}: report.kind={kind!r}, expected dataguard")
    if "schema.registry_root" not in kv:
        raise ArtifactError(f"{where}: missing key schema.registry_root")
    r = DataGuardReport(
        flow=kv.pop("report.flow", ""),
        registry_root=kv.pop("schema.registry_root"),
        schema_id=_int(kv, "schema.schema_id", where),
        msg_type=_int(kv, "schema.msg_type", where),
        required_version=_int(kv, "schema.required_version", where),
        selected_version=_int(kv, "schema.selected_version", where),
        mode=kv.pop("schema.mode", ""),
        expected_codec_id=_int(kv, "expected.codec_id", where),
    )
    kv.pop("policy.active", None)
    r.on_reject = kv.pop("policy.on_reject", "drop")
    r.hash_keyed = _bool(kv, "policy.hash_keyed", where)
    r.hash_key_env = kv.pop("policy.hash_key_env", "")
    n_rules = _int(kv, "policy.rule_count", where) if "policy.rule_count" in kv else 0
    for i in range(n_rules):
        key = f"policy.rules.{i}"
        if key not in kv:
            raise ArtifactError(f"{where}: missing key {key}")
        r.rules.append(kv.pop(key))
    r.counts = {name: _int(kv, f"counts.{name}", where) for name in COUNTERS}
    for i in range(n_rules):
        r.rule_counts.append((_int(kv, f"counts.rule.{i}.applied", where),
                              _int(kv, f"counts.rule.{i}.noop", where)))
    if "cost.sample_every" in kv:
        r.cost_sample_every = _int(kv, "cost.sample_every", where)
        r.cost = {k: _int(kv, f"cost.{k}", where) for k in COST_KEYS}
    r.extra = kv
    return r
