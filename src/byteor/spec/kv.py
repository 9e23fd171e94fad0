"""spec.kv v1: decode (fail closed), canonical encode, and the spec hash.

Format (docs/spec.md): UTF-8, one ``key=value`` per line, ``\\n`` line ends; the value is everything after
the first ``=``, verbatim. Input may hold blank lines and ``#`` comment lines; canonical output never
does. Decoding fails closed: every problem is an error naming the 1-based physical line and the key,
and all problems found in one pass are reported together.

The canonical form writes every key that applies, defaults included, in the documented order; the
spec hash is ``sha256:`` + the lowercase hex SHA-256 of those bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import SpecDecodeError, SpecIssue, UsageError
from .._fileio import NotRegularFileError, read_regular_file
from .model import (
    DEFAULT_CAPACITY,
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SLOT_BYTES,
    ENDPOINT_DIRECTIONS,
    LANE_KINDS,
    ON_FULL,
    ORDERINGS,
    PRODUCERS,
    ROLE_KINDS,
    SCHEDULINGS,
    STAGE_OPS,
    BytesKey,
    EndpointV1,
    LaneGraphSpecV1,
    LaneV1,
    PipelineSpecV1,
    RoleV1,
    SingleRingSpecV1,
    StageV1,
)

__all__ = [
    "MAX_SPEC_BYTES",
    "canonical_bytes",
    "canonical_pairs",
    "decode_kv",
    "encode_kv",
    "load_spec_file",
    "spec_hash",
]

#: Specs larger than this are refused before parsing.
MAX_SPEC_BYTES = 1024 * 1024
_MAX_INT = 2**63 - 1
_MAX_INT_DIGITS = len(str(_MAX_INT))
#: An array index longer than this cannot be dense (every earlier index would have to be present).
_MAX_INDEX_DIGITS = 9

_INDEX = r"(0|[1-9][0-9]*)"
_ANY_INDEX = r"([0-9]+)"
_BYTES_KEY = re.compile(r"bytes:([0-9]+):([0-9]+)")
_DECIMAL = re.compile(r"[0-9]+")


# --------------------------------------------------------------------------------------------------
# Value parsers: each returns the parsed value or raises _Bad with a message (no key, no line).
# --------------------------------------------------------------------------------------------------


class _Bad(Exception):
    pass


def _int(value: str) -> int:
    if not _DECIMAL.fullmatch(value):
        raise _Bad(f"expected a decimal integer, got {value[:40]!r}")
    # Checked on the text first: int() of thousands of digits is slow, and refused beyond 4300.
    if len(value.lstrip("0")) > _MAX_INT_DIGITS:
        raise _Bad(f"integer of {len(value)} digits is out of range (at most {_MAX_INT})")
    n = int(value)
    if n > _MAX_INT:
        raise _Bad(f"integer {value} is out of range")
    return n


def _u8(value: str) -> int:
    n = _int(value)
    if n > 255:
        raise _Bad(f"expected an integer 0..255, got {value}")
    return n


def _text(value: str) -> str:
    return value


def _enum(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise _Bad(f"expected one of {'|'.join(choices)}, got {value!r}")
        return value

    return parse


def _bytes_key(value: str) -> BytesKey:
    m = _BYTES_KEY.fullmatch(value)
    if not m:
        raise _Bad(f"expected bytes:<offset>:<len>, got {value!r}")
    return BytesKey(_int(m.group(1)), _int(m.group(2)))


def _shard_key(value: str) -> BytesKey | None:
    if value == "none":
        return None
    try:
        return _bytes_key(value)
    except _Bad:
        raise _Bad(f"expected none or bytes:<offset>:<len>, got {value!r}") from None


def _route(value: str) -> str | BytesKey:
    if value == "round_robin":
        return value
    try:
        return _bytes_key(value)
    except _Bad:
        raise _Bad(f"expected round_robin or bytes:<offset>:<len>, got {value!r}") from None


# --------------------------------------------------------------------------------------------------
# Key grammar
# --------------------------------------------------------------------------------------------------

_COMMON: dict[str, Callable[[str], Any]] = {
    "pipeline.name": _text,
    "pipeline.target": _enum(("SingleRing", "LaneGraph")),
}

_SINGLE_RING_SCALARS: dict[str, Callable[[str], Any]] = {
    "pipeline.constraints.shards": _int,
    "pipeline.constraints.ordering": _enum(ORDERINGS),
    "pipeline.constraints.producer": _enum(PRODUCERS),
    "pipeline.constraints.scheduling": _enum(SCHEDULINGS),
    "pipeline.constraints.shard_key": _shard_key,
    "pipeline.ring.capacity": _int,
    "pipeline.ring.slot_bytes": _int,
    "pipeline.ingress": _text,
    "pipeline.egress": _text,
}

_LANE_GRAPH_SCALARS: dict[str, Callable[[str], Any]] = {
    "pipeline.on_full": _enum(ON_FULL),
}

# array name -> (element fields, nested list fields)
_ARRAYS: dict[str, dict[str, tuple[dict[str, Callable[[str], Any]], tuple[str, ...]]]] = {
    "SingleRing": {
        "stages": (
            {"id": _text, "op": _enum(STAGE_OPS), "delta": _u8, "resolver_key": _text},
            ("depends_on",),
        ),
    },
    "LaneGraph": {
        "lanes": (
            {
                "name": _text,
                "kind": _enum(LANE_KINDS),
                "capacity": _int,
                "slot_bytes": _int,
                "fanout": _int,
                "segment_bytes": _int,
                "on_full": _enum(ON_FULL),
            },
            (),
        ),
        "endpoints": (
            {"name": _text, "direction": _enum(ENDPOINT_DIRECTIONS), "lane": _text},
            (),
        ),
        "roles": (
            {
                "name": _text,
                "kind": _enum(ROLE_KINDS),
                "op": _enum(STAGE_OPS),
                "delta": _u8,
                "resolver_key": _text,
                "route": _route,
            },
            ("inputs", "outputs"),
        ),
    },
}

_NESTED_PARSERS: dict[str, Callable[[str], Any]] = {"depends_on": _int, "inputs": _text, "outputs": _text}

_ARRAY_KEY = re.compile(r"pipeline\.([a-z_]+)\.([0-9]+)\.([a-z_]+)(?:\.([0-9]+))?")
_INDEX_OK = re.compile(_INDEX)


@dataclass
class _Line:
    lineno: int
    key: str
    value: str


@dataclass
class _Element:
    """Fields of one array element as read: field -> (parsed value, line); nested -> index -> ..."""

    fields: dict[str, tuple[Any, int]]
    nested: dict[str, dict[int, tuple[Any, int]]]
    first_line: int


def _line_key(data: bytes) -> str:
    """The key of the line ``data`` starts with, decoded leniently (for error messages only)."""
    line = data.split(b"\n", 1)[0]
    key = line.split(b"=", 1)[0] if b"=" in line else line[:80]
    return key.decode("utf-8", errors="replace")


class _Decoder:
    def __init__(self) -> None:
        self.issues: list[SpecIssue] = []

    def bad(self, key: str, message: str, line: int | None) -> None:
        self.issues.append(SpecIssue(key, message, line))

    def missing(self, key: str, line: int | None) -> None:
        """A required key is absent; one present with a bad value is already reported, not missing."""
        if not any(issue.key == key for issue in self.issues):
            self.bad(key, "missing required key", line)

    # -- text to lines -----------------------------------------------------------------------------

    def split(self, data: bytes) -> list[_Line]:
        if len(data) > MAX_SPEC_BYTES:
            self.bad("", f"spec is {len(data)} bytes, larger than the {MAX_SPEC_BYTES}-byte limit", None)
            return []
        if data.startswith(b"\xef\xbb\xbf"):
            self.bad(_line_key(data[3:]), "spec starts with a UTF-8 byte order mark (BOM); remove it", 1)
            return []
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            lineno = data.count(b"\n", 0, exc.start) + 1
            start = data.rfind(b"\n", 0, exc.start) + 1
            self.bad(_line_key(data[start:]), f"invalid UTF-8 at byte {exc.start}", lineno)
            return []
        lines: list[_Line] = []
        seen: dict[str, int] = {}
        raw_lines = text.split("\n")
        if raw_lines and raw_lines[-1] == "":
            raw_lines.pop()
        for lineno, raw in enumerate(raw_lines, start=1):
            if raw.endswith("\r"):
                key = raw.split("=", 1)[0] if "=" in raw else ""
                self.bad(key, "CRLF line ending; spec.kv lines end with \\n only", lineno)
                continue
            if raw == "" or raw.startswith("#"):
                continue
            if "\r" in raw or "\x00" in raw:
                self.bad(raw.split("=", 1)[0], "control character (CR or NUL) in line", lineno)
                continue
            if "=" not in raw:
                self.bad(raw[:80], "line has no '='", lineno)
                continue
            key, value = raw.split("=", 1)
            if key in seen:
                self.bad(key, f"duplicate key (first on line {seen[key]})", lineno)
                continue
            seen[key] = lineno
            lines.append(_Line(lineno, key, value))
        return lines

    # -- lines to fields ---------------------------------------------------------------------------

    def decode(self, data: bytes) -> PipelineSpecV1 | None:
        lines = self.split(data)
        if self.issues:
            return None
        by_key = {ln.key: ln for ln in lines}
        target_line = by_key.get("pipeline.target")
        if target_line is None:
            self.bad("pipeline.target", "missing required key", None)
            return None
        try:
            target = _COMMON["pipeline.target"](target_line.value)
        except _Bad as exc:
            self.bad("pipeline.target", str(exc), target_line.lineno)
            return None
        scalars_spec = _SINGLE_RING_SCALARS if target == "SingleRing" else _LANE_GRAPH_SCALARS
        arrays_spec = _ARRAYS[target]
        scalars: dict[str, tuple[Any, int]] = {}
        arrays: dict[str, dict[int, _Element]] = {name: {} for name in arrays_spec}

        for ln in lines:
            key = ln.key
            parser = _COMMON.get(key) or scalars_spec.get(key)
            if parser is not None:
                try:
                    scalars[key] = (parser(ln.value), ln.lineno)
                except _Bad as exc:
                    self.bad(key, str(exc), ln.lineno)
                continue
            m = _ARRAY_KEY.fullmatch(key)
            if m is None or m.group(1) not in arrays_spec:
                self.bad(key, self._unknown_reason(key, target), ln.lineno)
                continue
            array, idx_s, field, sub_s = m.groups()
            fields, nested_names = arrays_spec[array]
            if (sub_s is None and field not in fields) or (sub_s is not None and field not in nested_names):
                self.bad(key, self._unknown_reason(key, target), ln.lineno)
                continue
            bad_index = next((s for s in (idx_s, sub_s) if s is not None and not _INDEX_OK.fullmatch(s)),
                             None)
            if bad_index is not None:
                self.bad(key, f"index {bad_index[:20]!r} has a leading zero", ln.lineno)
                continue
            long_index = next((s for s in (idx_s, sub_s) if s is not None and len(s) > _MAX_INDEX_DIGITS), None)
            if long_index is not None:
                self.bad(key[:80], f"index of {len(long_index)} digits is out of range", ln.lineno)
                continue
            element = arrays[array].setdefault(int(idx_s), _Element({}, {}, ln.lineno))
            element.first_line = min(element.first_line, ln.lineno)
            try:
                if sub_s is None:
                    element.fields[field] = (fields[field](ln.value), ln.lineno)
                else:
                    parsed = _NESTED_PARSERS[field](ln.value)
                    element.nested.setdefault(field, {})[int(sub_s)] = (parsed, ln.lineno)
            except _Bad as exc:
                self.bad(key, str(exc), ln.lineno)

        name = self._required_scalar(scalars, "pipeline.name")
        dense = {array: self._dense(f"pipeline.{array}", elems) for array, elems in arrays.items()}
        if target == "SingleRing":
            stages = [self._stage(i, e) for i, e in enumerate(dense["stages"])]
            spec: PipelineSpecV1 | None = self._single_ring(name, scalars, stages)
        else:
            lanes = [self._lane(i, e) for i, e in enumerate(dense["lanes"])]
            endpoints = [self._endpoint(i, e) for i, e in enumerate(dense["endpoints"])]
            roles = [self._role(i, e) for i, e in enumerate(dense["roles"])]
            spec = self._lane_graph(name, scalars, lanes, endpoints, roles)
        return None if self.issues else spec

    @staticmethod
    def _unknown_reason(key: str, target: str) -> str:
        other = "LaneGraph" if target == "SingleRing" else "SingleRing"
        other_arrays = _ARRAYS[other]
        m = _ARRAY_KEY.fullmatch(key)
        if key in (_LANE_GRAPH_SCALARS if other == "LaneGraph" else _SINGLE_RING_SCALARS) or (
            m is not None and m.group(1) in other_arrays
        ):
            return f"unknown key: it belongs to {other} specs, this spec's target is {target}"
        return "unknown key"

    def _required_scalar(self, scalars: dict[str, tuple[Any, int]], key: str) -> Any:
        if key not in scalars:
            self.missing(key, None)
            return ""
        return scalars[key][0]

    def _dense(self, prefix: str, elems: dict[int, Any]) -> list[Any]:
        out: list[Any] = []
        for expected, idx in enumerate(sorted(elems)):
            if idx != expected:
                elem = elems[idx]
                line = elem.first_line if isinstance(elem, _Element) else elem[1]
                self.bad(f"{prefix}.{idx}", f"index gap: {prefix}.{expected} is missing", line)
                break
            out.append(elems[idx])
        return out

    def _nested(self, prefix: str, element: _Element, name: str) -> tuple[Any, ...]:
        items = self._dense(f"{prefix}.{name}", element.nested.get(name, {}))
        return tuple(value for value, _line in items)

    def _field(self, prefix: str, element: _Element, field: str, *, default: Any = None,
               required: bool = False, applies: bool = True, why: str = "") -> Any:
        if field in element.fields:
            value, line = element.fields[field]
            if not applies:
                self.bad(f"{prefix}.{field}", f"key does not apply {why}", line)
                return None
            return value
        if required and applies:
            self.missing(f"{prefix}.{field}", element.first_line)
        return default if applies else None

    def _op_fields(self, prefix: str, e: _Element, *, is_stage: bool = True,
                   why: str = "") -> tuple[str | None, int | None, str | None]:
        op = self._field(prefix, e, "op", default="identity", applies=is_stage, why=why)
        delta = self._field(prefix, e, "delta", default=1, applies=op == "add_u8",
                            why=f"to op {op}" if is_stage else why)
        key = self._field(prefix, e, "resolver_key", default=None, applies=op == "resolver",
                          why=f"to op {op}" if is_stage else why)
        return op, delta, key

    def _stage(self, i: int, e: _Element) -> StageV1:
        prefix = f"pipeline.stages.{i}"
        stage_id = self._field(prefix, e, "id", default="", required=True)
        op, delta, key = self._op_fields(prefix, e)
        return StageV1(stage_id, op or "identity", delta, key, self._nested(prefix, e, "depends_on"))

    def _single_ring(self, name: str, sc: dict[str, tuple[Any, int]],
                     stages: list[StageV1]) -> SingleRingSpecV1:
        def get(key: str, default: Any) -> Any:
            return sc[key][0] if key in sc else default

        shards = get("pipeline.constraints.shards", 1)
        return SingleRingSpecV1(
            name=name,
            stages=tuple(stages),
            shards=shards,
            ordering=get("pipeline.constraints.ordering", "strict" if shards == 1 else "per_key"),
            producer=get("pipeline.constraints.producer", "single"),
            scheduling=get("pipeline.constraints.scheduling", "dedicated"),
            shard_key=get("pipeline.constraints.shard_key", None),
            capacity=get("pipeline.ring.capacity", DEFAULT_CAPACITY),
            slot_bytes=get("pipeline.ring.slot_bytes", DEFAULT_SLOT_BYTES),
            ingress=get("pipeline.ingress", "ingress"),
            egress=get("pipeline.egress", "egress"),
        )

    def _lane(self, i: int, e: _Element) -> LaneV1:
        prefix = f"pipeline.lanes.{i}"
        name = self._field(prefix, e, "name", default="", required=True)
        kind = self._field(prefix, e, "kind", default=None, required=True)
        if kind is None:
            return LaneV1(name, "", DEFAULT_CAPACITY)
        why = f"to {kind} lanes"
        return LaneV1(
            name=name,
            kind=kind,
            capacity=self._field(prefix, e, "capacity", default=DEFAULT_CAPACITY, applies=kind != "journal",
                                 why=why),
            slot_bytes=self._field(prefix, e, "slot_bytes", default=DEFAULT_SLOT_BYTES),
            fanout=self._field(prefix, e, "fanout", required=True, applies=kind == "fanout", why=why),
            segment_bytes=self._field(prefix, e, "segment_bytes", default=DEFAULT_SEGMENT_BYTES,
                                      applies=kind == "journal", why=why),
            on_full=self._field(prefix, e, "on_full", default=None),
        )

    def _endpoint(self, i: int, e: _Element) -> EndpointV1:
        prefix = f"pipeline.endpoints.{i}"
        return EndpointV1(
            name=self._field(prefix, e, "name", default="", required=True),
            direction=self._field(prefix, e, "direction", default="", required=True),
            lane=self._field(prefix, e, "lane", default="", required=True),
        )

    def _role(self, i: int, e: _Element) -> RoleV1:
        prefix = f"pipeline.roles.{i}"
        name = self._field(prefix, e, "name", default="", required=True)
        kind = self._field(prefix, e, "kind", default=None, required=True)
        why = f"to {kind} roles"
        op, delta, key = self._op_fields(prefix, e, is_stage=kind == "stage", why=why)
        route = self._field(prefix, e, "route", default=None, required=True, applies=kind == "router",
                            why=why)
        return RoleV1(
            name=name,
            kind=kind or "",
            inputs=self._nested(prefix, e, "inputs"),
            outputs=self._nested(prefix, e, "outputs"),
            op=op,
            delta=delta,
            resolver_key=key,
            route=route,
        )

    def _lane_graph(self, name: str, sc: dict[str, tuple[Any, int]], lanes: list[LaneV1],
                    endpoints: list[EndpointV1], roles: list[RoleV1]) -> LaneGraphSpecV1:
        on_full = sc["pipeline.on_full"][0] if "pipeline.on_full" in sc else "block"
        return LaneGraphSpecV1(name, tuple(lanes), tuple(endpoints), tuple(roles), on_full)


def decode_kv(data: bytes | str, *, path: str | None = None) -> PipelineSpecV1:
    """Decode spec.kv text into a :data:`PipelineSpecV1` with every default resolved.

    Raises :class:`~byteor.SpecDecodeError` listing every problem found (line and key each). It
    does not run validate_v1: a decoded spec may still be invalid.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    decoder = _Decoder()
    spec = decoder.decode(raw)
    if spec is None:
        raise SpecDecodeError(decoder.issues or [SpecIssue("", "empty spec")], path=path)
    return spec


# --------------------------------------------------------------------------------------------------
# Canonical encoding
# --------------------------------------------------------------------------------------------------


def _op_lines(prefix: str, op: str | None, delta: int | None, key: str | None) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = [(f"{prefix}.op", op)]
    if op == "add_u8":
        out.append((f"{prefix}.delta", 1 if delta is None else delta))
    if op == "resolver":
        out.append((f"{prefix}.resolver_key", key or ""))
    return out


def _pairs(spec: PipelineSpecV1) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = [("pipeline.name", spec.name), ("pipeline.target", spec.target)]
    if isinstance(spec, SingleRingSpecV1):
        out += [
            ("pipeline.constraints.shards", spec.shards),
            ("pipeline.constraints.ordering", spec.ordering),
            ("pipeline.constraints.producer", spec.producer),
            ("pipeline.constraints.scheduling", spec.scheduling),
            ("pipeline.constraints.shard_key", spec.shard_key or "none"),
            ("pipeline.ring.capacity", spec.capacity),
            ("pipeline.ring.slot_bytes", spec.slot_bytes),
            ("pipeline.ingress", spec.ingress),
            ("pipeline.egress", spec.egress),
        ]
        for i, st in enumerate(spec.stages):
            p = f"pipeline.stages.{i}"
            out.append((f"{p}.id", st.id))
            out += _op_lines(p, st.op, st.delta, st.resolver_key)
            out += [(f"{p}.depends_on.{k}", d) for k, d in enumerate(st.depends_on)]
        return out
    out.append(("pipeline.on_full", spec.on_full))
    for i, lane in enumerate(spec.lanes):
        p = f"pipeline.lanes.{i}"
        out += [(f"{p}.name", lane.name), (f"{p}.kind", lane.kind)]
        if lane.kind != "journal":
            out.append((f"{p}.capacity", DEFAULT_CAPACITY if lane.capacity is None else lane.capacity))
        out.append((f"{p}.slot_bytes", lane.slot_bytes))
        if lane.kind == "fanout" and lane.fanout is not None:
            out.append((f"{p}.fanout", lane.fanout))
        if lane.kind == "journal":
            seg = DEFAULT_SEGMENT_BYTES if lane.segment_bytes is None else lane.segment_bytes
            out.append((f"{p}.segment_bytes", seg))
        if lane.on_full is not None:
            out.append((f"{p}.on_full", lane.on_full))
    for i, ep in enumerate(spec.endpoints):
        p = f"pipeline.endpoints.{i}"
        out += [(f"{p}.name", ep.name), (f"{p}.direction", ep.direction), (f"{p}.lane", ep.lane)]
    for i, role in enumerate(spec.roles):
        p = f"pipeline.roles.{i}"
        out += [(f"{p}.name", role.name), (f"{p}.kind", role.kind)]
        out += [(f"{p}.inputs.{k}", lane_name) for k, lane_name in enumerate(role.inputs)]
        out += [(f"{p}.outputs.{k}", lane_name) for k, lane_name in enumerate(role.outputs)]
        if role.kind == "stage":
            out += _op_lines(p, role.op or "identity", role.delta, role.resolver_key)
        if role.kind == "router" and role.route is not None:
            out.append((f"{p}.route", role.route))
    return out


def canonical_pairs(spec: PipelineSpecV1) -> list[tuple[str, str]]:
    """The canonical ``(key, value)`` pairs of ``spec``, in canonical order, values as written."""
    return [(key, str(value)) for key, value in _pairs(spec)]


def encode_kv(spec: PipelineSpecV1) -> str:
    """The canonical KV text of ``spec``: every applicable key, defaults included, fixed order."""
    return "".join(f"{key}={value}\n" for key, value in _pairs(spec))


def canonical_bytes(spec: PipelineSpecV1) -> bytes:
    """The canonical KV bytes (UTF-8) that the spec hash is computed over."""
    return encode_kv(spec).encode("utf-8")


def spec_hash(spec: PipelineSpecV1) -> str:
    """``sha256:<lowercase hex>`` of the canonical bytes: the identity of a pipeline version."""
    return "sha256:" + hashlib.sha256(canonical_bytes(spec)).hexdigest()


def load_spec_file(path: str | os.PathLike[str]) -> PipelineSpecV1:
    """Read and decode a spec file. A missing or unreadable file is a :class:`UsageError` (exit 2)."""
    p = os.fspath(path)
    try:
        data = read_regular_file(p, MAX_SPEC_BYTES)
    except FileNotFoundError:
        raise UsageError(f"{p}: spec file does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{p}: is a directory, expected a spec.kv file") from None
    except NotRegularFileError as exc:
        raise UsageError(f"{p}: {exc.strerror}; a spec must be a regular file") from None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read spec file: {exc.strerror}") from None
    return decode_kv(data, path=p)
