"""The DataGuard engine: check, redact, or both in one pass (fused), with the report's counters.

Built once at startup (:class:`DataGuard`), it resolves the registry tuple (a missing, too-old or
wrong-codec schema raises :class:`RegistryError`), checks the rules against the selected schema
(:class:`RuleError`) and compiles one plan per message version on first sight. Per message it
classifies, in this order, and counts exactly one outcome:

1. the envelope does not decode (bad magic, lengths, flags)          -> ``decode_err``
2. ``codec_id`` differs from the run's mode                           -> ``codec_mismatch``
3. ``(schema_id, msg_type)`` is not the run's: unregistered           -> ``schema_missing``;
   registered, but another tuple                                       -> ``schema_incompatible``
4. ``msg_version < required_version``                                  -> ``schema_incompatible``;
   no file for ``msg_version``                                         -> ``schema_missing``;
   that file's codec is not the mode, or a rule does not fit it (row)  -> ``schema_incompatible``
5. the payload does not decode (truncated, bad tag, bad UTF-8, ...)   -> ``decode_err``
6. check and fused flows: an unknown field, a value whose tag is not the field's type, or a missing
   required field                                                      -> ``schema_incompatible``
   (the redact flow skips step 6; in row mode the tags must still match, step 5)
7. redact and fused flows: the redacted envelope is larger than the slot or than 65535 payload
   bytes                                                               -> ``redact_overflow`` (dropped)

Anything else is accepted. Output: an accepted message is forwarded as the redacted envelope
(``out_forward_output``) when a rule changed it, else as its input bytes (``out_forward_input``); a
rejected one is dropped (``out_drop``) or, with ``on_reject="forward_input"``, forwarded unchanged
(beware: unredacted). ``redact_overflow`` is always dropped. The redacted envelope has a 24-byte
header (extra header bytes of the input are not carried over) and, in mapkv, keys in input order.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from .. import _native
from .codecs import (
    TAG_BOOL,
    TAG_BYTES,
    TAG_INT,
    TAG_STRING,
    TYPE_TAGS,
    Value,
    read_varint,
    unzigzag,
    write_value,
    write_varint,
)
from .envelope import CODEC_IDS, MAX_PAYLOAD_LEN, V1_HEADER_LEN, decode_header, encode_into
from .errors import CodecError, EnvelopeError, RegistryError, RuleError
from .registry import Registry, Schema
from .report import COUNTERS, DataGuardReport
from .rules import APPLIED, DROPPED, RuleSet, apply_rule, i64_of

__all__ = ["DROP", "FLOWS", "FORWARD_INPUT", "ON_REJECT", "DataGuard", "GuardConfig"]

FLOWS = ("check", "redact", "fused")
ON_REJECT = ("drop", "forward_input")
#: :meth:`DataGuard.process_into` results (a length >= 0 means "forward out[:length]").
DROP = -1
FORWARD_INPUT = -2
#: Largest envelope v1 can describe; the default capacity.
MAX_ENVELOPE = V1_HEADER_LEN + MAX_PAYLOAD_LEN

_EMPTY: dict[int, Value] = {TAG_STRING: "", TAG_INT: 0, TAG_BYTES: b"", TAG_BOOL: False}


@dataclass(frozen=True)
class GuardConfig:
    """Everything a DataGuard run needs; ``capacity`` is the slot size output must fit."""

    registry_root: str
    schema_id: int
    msg_type: int
    required_version: int
    mode: str = "mapkv"
    flow: str = "fused"
    rules: RuleSet = field(default_factory=lambda: RuleSet([]))
    on_reject: str = "drop"
    cost_sample: int = 0
    capacity: int = MAX_ENVELOPE


class _Plan:
    """One message version, compiled: field tags by key, required names, rule indices by key."""

    __slots__ = ("fields", "key_prefix", "names", "required", "row", "rules_by_key", "tags")

    def __init__(self, schema: Schema, rules: RuleSet) -> None:
        self.tags: dict[str, int] = {f.name: TYPE_TAGS[f.type] for f in schema.fields}
        #: UTF-8 key bytes -> name, so known keys are never decoded per message
        self.names: dict[bytes, str] = {f.name.encode("utf-8"): f.name for f in schema.fields}
        #: name -> varint(len) + UTF-8 key, what mapkv output writes before a value
        self.key_prefix: dict[str, bytes] = {}
        for f in schema.fields:
            data = f.name.encode("utf-8")
            buf = bytearray()
            write_varint(buf, len(data))
            self.key_prefix[f.name] = bytes(buf + data)
        self.required: frozenset[str] = frozenset(f.name for f in schema.fields if f.required)
        self.row: tuple[tuple[str, int], ...] = tuple((f.name, TYPE_TAGS[f.type]) for f in schema.fields)
        self.rules_by_key = rules.by_field
        self.fields = schema.fields


class DataGuard:
    """A configured DataGuard run. Not thread-safe: one instance per stage process or CLI run."""

    def __init__(self, config: GuardConfig) -> None:
        c = config
        if c.flow not in FLOWS:
            raise RuleError(f"flow {c.flow!r} is not one of {', '.join(FLOWS)}")
        if c.mode not in CODEC_IDS:
            raise RegistryError(f"mode {c.mode!r} is not mapkv or row")
        if c.on_reject not in ON_REJECT:
            raise RuleError(f"on_reject {c.on_reject!r} is not one of {', '.join(ON_REJECT)}")
        if c.cost_sample < 0:
            raise RuleError(f"cost sample {c.cost_sample} must be >= 0")
        if c.capacity < V1_HEADER_LEN:
            raise RegistryError(f"capacity {c.capacity} is below the 24-byte USM1 header")
        self.config = c
        self.registry = Registry(c.registry_root)
        self.selected: Schema = self.registry.require(c.schema_id, c.msg_type, c.required_version, c.mode)
        self.rules = c.rules
        self._redacts = c.flow != "check" and bool(c.rules.rules)
        self._checks = c.flow != "redact"
        why = self._rules_misfit(self.selected) or self._unknown_rule_field()
        if why:
            raise RuleError(why)
        self.expected_codec = CODEC_IDS[c.mode]
        self._plans: dict[int, _Plan | str] = {}
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._rule_applied = [0] * len(c.rules.rules)
        self._rule_noop = [0] * len(c.rules.rules)
        self._messages = 0
        self._native: Any = _native_plan(self, self.selected)
        self._fast: Any = self._native.run if self._native is not None else None
        self._cost = {"samples": 0, "ns_total": 0, "ns_max": 0, "bytes_in": 0, "bytes_out": 0}
        self._scratch = bytearray()
        self._out = bytearray(c.capacity)

    # ---------------------------------------------------------------- startup / plans

    def _rules_misfit(self, schema: Schema) -> str | None:
        if self.config.flow == "check":
            return None
        types = {f.name: f.type for f in schema.fields}
        return self.rules.check_schema_types(types, f"schema {schema.path}")

    def _unknown_rule_field(self) -> str | None:
        """A rule naming a field no registered version >= required has (a typo would redact nothing)."""
        if not self._redacts:
            return None
        c = self.config
        known: set[str] = set()
        for v in self.registry.versions(c.schema_id, c.msg_type):
            if v >= c.required_version:
                try:
                    schema = self.registry.get(c.schema_id, c.msg_type, v)
                except RegistryError:
                    continue
                if schema is not None:
                    known.update(f.name for f in schema.fields)
        for r in self.rules.rules:
            if r.field not in known:
                return (f"rule {r.text!r}: no registered version >= {c.required_version} of schema_id="
                        f"{c.schema_id} msg_type={c.msg_type} has a field {r.field!r}")
        return None

    def _plan(self, version: int) -> _Plan | str:
        """The compiled plan for a message version, or the rejection counter that version earns."""
        hit = self._plans.get(version)
        if hit is not None:
            return hit
        c = self.config
        plan: _Plan | str
        if version < c.required_version:
            plan = "schema_incompatible"
        else:
            try:
                schema = self.registry.get(c.schema_id, c.msg_type, version)
            except RegistryError:  # the file exists but is malformed: that version cannot be served
                plan = "schema_incompatible"
            else:
                if schema is None:
                    plan = "schema_missing"
                elif schema.codec != c.mode or self._rules_misfit(schema):
                    plan = "schema_incompatible"
                else:
                    plan = _Plan(schema, self.rules)
        self._plans[version] = plan  # at most 65536 versions (u16)
        return plan

    # ---------------------------------------------------------------- per message

    def process(self, msg: bytes | bytearray | memoryview) -> bytes | None:
        """Run one envelope; return the bytes to forward, or None when it is dropped."""
        n = self.process_into(msg, self._out)
        if n == DROP:
            return None
        if n == FORWARD_INPUT:
            return bytes(msg)
        return bytes(self._out[:n])

    def process_into(self, msg: bytes | bytearray | memoryview, out: bytearray | memoryview) -> int:
        """Run one envelope; write a redacted envelope into ``out`` when there is one.

        Returns the length written to ``out`` (forward ``out[:n]``), :data:`FORWARD_INPUT` (forward
        ``msg`` as it is) or :data:`DROP`. ``out`` must not overlap ``msg``.
        """
        sample = self.config.cost_sample
        if sample:
            self._messages += 1
            if (self._messages - 1) % sample == 0:
                t0 = time.perf_counter_ns()
                result = self._run(msg, out)
                dt = time.perf_counter_ns() - t0
                cost = self._cost
                cost["samples"] += 1
                cost["ns_total"] += dt
                cost["ns_max"] = max(cost["ns_max"], dt)
            else:
                result = self._run(msg, out)
            self._cost["bytes_in"] += len(msg)
            self._cost["bytes_out"] += (len(msg) if result == FORWARD_INPUT else result if result > 0 else 0)
            return result
        return self._run(msg, out)

    def _reject(self, reason: str) -> int:
        counts = self._counts
        counts[reason] += 1
        counts["rejected"] += 1
        if self.config.on_reject == "forward_input":
            counts["out_forward_input"] += 1
            return FORWARD_INPUT
        counts["out_drop"] += 1
        return DROP

    def _run(self, msg: bytes | bytearray | memoryview, out: bytearray | memoryview) -> int:
        fast = self._fast
        if fast is not None:
            r: int = fast(msg, out)
            if r != _FALLBACK:
                return r
        counts = self._counts
        counts["seen"] += 1
        c = self.config
        try:
            h = decode_header(msg, c.capacity)
        except EnvelopeError:
            return self._reject("decode_err")
        if h.codec_id != self.expected_codec:
            return self._reject("codec_mismatch")
        if h.schema_id != c.schema_id or h.msg_type != c.msg_type:
            known = self.registry.has_tuple(h.schema_id, h.msg_type)
            return self._reject("schema_incompatible" if known else "schema_missing")
        plan = self._plans.get(h.msg_version) or self._plan(h.msg_version)
        if isinstance(plan, str):
            return self._reject(plan)
        payload = bytes(msg[h.header_len:h.header_len + h.payload_len])
        try:
            pairs = self._decode(plan, payload)
        except CodecError:
            return self._reject("decode_err")
        except _Incompatible:
            return self._reject("schema_incompatible")
        if self._checks:
            tags = plan.tags
            present = set()
            for key, tag, _, _ in pairs:
                want = tags.get(key)
                if want is None or want != tag:
                    return self._reject("schema_incompatible")
                present.add(key)
            if not plan.required <= present:
                return self._reject("schema_incompatible")
        if not self._redacts:
            counts["accepted"] += 1
            counts["out_forward_input"] += 1
            return FORWARD_INPUT
        return self._redact(h, plan, pairs, out)

    def _decode(self, plan: _Plan, buf: bytes) -> list[_Pair]:
        """Every (name, tag, value, raw content bytes or None) of the payload, in wire order."""
        pairs: list[_Pair] = []
        size = len(buf)
        if self.config.mode == "row":
            pos = 0
            for name, want in plan.row:
                tag, value, raw, pos = _read_tagged(buf, pos, size)
                if tag != want:
                    raise _Incompatible
                pairs.append((name, tag, value, raw))
        else:
            count, pos = read_varint(buf, 0)
            names = plan.names
            seen: set[str] = set()
            for _ in range(count):
                if pos < size and buf[pos] < 0x80:
                    n = buf[pos]
                    pos += 1
                else:
                    n, pos = read_varint(buf, pos)
                end = pos + n
                if end > size:
                    raise CodecError("key runs past the payload end")
                kb = buf[pos:end]
                key = names.get(kb)
                if key is None:
                    try:
                        key = kb.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise CodecError("key is not UTF-8") from exc
                if key in seen:
                    raise CodecError("duplicate key")
                seen.add(key)
                tag, value, raw, pos = _read_tagged(buf, end, size)
                pairs.append((key, tag, value, raw))
        if pos != size:
            raise CodecError("trailing bytes")
        return pairs

    def _redact(self, h: Any, plan: _Plan, pairs: list[_Pair], out: bytearray | memoryview) -> int:
        counts = self._counts
        rules = self.rules.rules
        by_key = plan.rules_by_key
        key_prefix = plan.key_prefix
        key = self.rules.hash_key
        row = self.config.mode == "row"
        changed = False
        body = self._scratch
        del body[:]
        kept = 0
        prefix = b""
        for name, tag, value, raw in pairs:
            if not row:
                known = key_prefix.get(name)
                if known is None:  # a key the schema lacks (redact flow): encode it here
                    data = name.encode("utf-8")
                    pb = bytearray()
                    write_varint(pb, len(data))
                    known = bytes(pb + data)
                prefix = known
            idx = by_key.get(name)
            if idx is None:
                if not row:
                    body += prefix
                if raw is not None:  # string/bytes: the validated content bytes as they came
                    body.append(tag)
                    n = len(raw)
                    if n < 0x80:
                        body.append(n)
                    else:
                        write_varint(body, n)
                    body += raw
                else:
                    write_value(body, value, tag)
                kept += 1
                continue
            new: Any = value
            for i in idx:
                new, status = apply_rule(rules[i], new, key)
                if status == APPLIED:
                    self._rule_applied[i] += 1
                    changed = True
                else:
                    self._rule_noop[i] += 1
                    counts["redact_noop"] += 1
                if new is DROPPED:
                    break
            if new is DROPPED:
                if not row:
                    continue
                new = _EMPTY[tag]
            if row:
                write_value(body, new, tag)
            else:
                body += prefix
                write_value(body, new)
            kept += 1
        if not changed:
            counts["accepted"] += 1
            counts["out_forward_input"] += 1
            return FORWARD_INPUT
        if not row:
            head = bytearray()
            write_varint(head, kept)
            body[0:0] = head
        total = V1_HEADER_LEN + len(body)
        if len(body) > MAX_PAYLOAD_LEN or total > min(len(out), self.config.capacity):
            counts["redact_overflow"] += 1
            counts["rejected"] += 1
            counts["out_drop"] += 1
            return DROP
        encode_into(out, 0, body, codec_id=h.codec_id, schema_id=h.schema_id, msg_type=h.msg_type,
                    msg_version=h.msg_version, flags=h.flags)
        counts["accepted"] += 1
        counts["out_forward_output"] += 1
        return total

    # ---------------------------------------------------------------- counters / report

    @property
    def native(self) -> bool:
        """Whether messages of the selected version run through the C kernel."""
        return self._native is not None

    @property
    def counts(self) -> dict[str, int]:
        """The report counters so far (the Python path's plus the C kernel's)."""
        out = dict(self._counts)
        if self._native is not None:
            for name, v in zip(COUNTERS, self._native.counts(), strict=True):
                out[name] += v
        return out

    def _rule_totals(self) -> list[tuple[int, int]]:
        pairs = list(zip(self._rule_applied, self._rule_noop, strict=True))
        if self._native is not None:
            pairs = [(a + c, b + d) for (a, b), (c, d) in zip(pairs, self._native.rule_counts(), strict=True)]
        return pairs

    @property
    def rule_applied(self) -> list[int]:
        return [a for a, _ in self._rule_totals()]

    @property
    def rule_noop(self) -> list[int]:
        return [n for _, n in self._rule_totals()]


    def report(self) -> DataGuardReport:
        """The report KV v1 of everything processed so far."""
        c = self.config
        cost: dict[str, int] = {}
        if c.cost_sample:
            cost = dict(self._cost)
            cost["ns_avg"] = cost["ns_total"] // cost["samples"] if cost["samples"] else 0
        return DataGuardReport(
            flow=c.flow,
            registry_root=os.path.abspath(c.registry_root),
            schema_id=c.schema_id,
            msg_type=c.msg_type,
            required_version=c.required_version,
            selected_version=self.selected.msg_version,
            mode=c.mode,
            expected_codec_id=self.expected_codec,
            on_reject=c.on_reject,
            rules=[r.text for r in self.rules.rules] if c.flow != "check" else [],
            hash_keyed=self.rules.hash_keyed and c.flow != "check",
            hash_key_env=self.rules.hash_key_env,
            counts=self.counts,
            rule_counts=self._rule_totals() if c.flow != "check" else [],
            cost_sample_every=c.cost_sample,
            cost=cost,
        )


_FALLBACK = -3
_ACTIONS = {"drop": 0, "replace_with": 1, "hash": 2, "mask": 3, "truncate": 4}
def _native_plan(guard: DataGuard, schema: Schema) -> Any:
    """The C plan for the selected version, or None (``BYTEOR_DATAGUARD_NATIVE=0``, more than 64
    fields, or a field named by more than one rule: those run in Python)."""
    if os.environ.get("BYTEOR_DATAGUARD_NATIVE", "1") == "0":
        return None
    c = guard.config
    rules = guard.rules
    if len(schema.fields) > 64 or len(rules.rules) > 64 or any(len(v) > 1 for v in rules.by_field.values()):
        return None
    redacts = guard._redacts
    fields = tuple(
        (f.name.encode("utf-8"), TYPE_TAGS[f.type], f.required,
         rules.by_field[f.name][0] if redacts and f.name in rules.by_field else -1)
        for f in schema.fields)
    rule_specs = []
    for r in rules.rules:
        as_int = i64_of(r.value) if r.action == "replace_with" else None
        as_bool = {"true": 1, "false": 0}.get(r.value, -1) if r.action == "replace_with" else -1
        rule_specs.append((_ACTIONS[r.action], r.value.encode("utf-8"), as_int, as_bool, r.prefix, r.suffix,
                           r.mask_char.encode("utf-8"), r.n))
    return _native.DgPlan(CODEC_IDS[c.mode], c.schema_id, c.msg_type, schema.msg_version, c.mode == "row",
                     guard._checks, redacts, c.on_reject == "forward_input", c.capacity, fields,
                     tuple(rule_specs), rules.hash_key)


#: One decoded field: name, tag, value, and the content bytes of a string/bytes value.
_Pair = tuple[str, int, Value, bytes | None]


class _Incompatible(Exception):
    """Internal: a row value's tag is not its field's type."""


def _read_tagged(buf: bytes, pos: int, size: int) -> tuple[int, Value, bytes | None, int]:
    """``(tag, value, raw content bytes for string/bytes else None, next position)``."""
    if pos < size and buf[pos] < 0x80:
        tag = buf[pos]
        pos += 1
    else:
        tag, pos = read_varint(buf, pos)
    if tag in (TAG_STRING, TAG_BYTES):
        if pos < size and buf[pos] < 0x80:
            n = buf[pos]
            pos += 1
        else:
            n, pos = read_varint(buf, pos)
        end = pos + n
        if end > size:
            raise CodecError("value runs past the payload end")
        raw = buf[pos:end]
        if tag == TAG_BYTES:
            return tag, raw, raw, end
        try:
            return tag, raw.decode("utf-8"), raw, end
        except UnicodeDecodeError as exc:
            raise CodecError("string is not UTF-8") from exc
    if tag == TAG_INT:
        u, pos = read_varint(buf, pos)
        return tag, unzigzag(u), None, pos
    if tag == TAG_BOOL:
        if pos >= size or buf[pos] > 1:
            raise CodecError("bad bool")
        return tag, buf[pos] == 1, None, pos + 1
    raise CodecError(f"unknown tag {tag}")
