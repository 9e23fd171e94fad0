"""``runtime_config.txt``: the runtime's own settings and its effective tuning, as key=value lines.

Format (v1), the same line rules as spec.kv: UTF-8, one ``key=value`` per line, the value is
everything after the first ``=`` verbatim, blank lines and ``#`` comments allowed on input, never
written. Unknown or duplicate keys are errors naming the line and the key (fail closed).

Request keys (what an operator writes; ``run --config=FILE`` reads them)::

    config.v=1                                   schema version (optional on input, always written)
    runtime.tuning=default|low-latency|isolated-core
    runtime.wait=spin|yield|backoff|block        overrides the profile's wait strategy
    runtime.cpus=<cpu list: 2,3 or 2-5 or empty>  CPUs stages may be pinned to (empty: the affinity set)
    runtime.mlockall=true|false                  overrides the profile
    runtime.sched_fifo_priority=<0..99>          0 = no SCHED_FIFO; overrides the profile
    runtime.env=dev|staging|prod
    runtime.ring_path=<dir>                      SingleRing files (default /dev/shm/byteor/<name>-<hash8>/)
    runtime.lane_path=<dir>                      LaneGraph lane files
    runtime.journal_dir=<dir>                    journal lanes (default /var/tmp/byteor/<name>-<hash8>/)
    runtime.journal_fsync=none|segment|always
    runtime.metrics=<host>:<port>                 serve Prometheus metrics and /healthz, /readyz there
    runtime.log_format=text|json                 lifecycle events as text lines or JSON lines

Effective tuning (written by the runtime after :func:`byteor.ops.tuning.apply_profile`, one group
per role and knob, read back by ``incident-bundle`` and ``doctor``)::

    tuning.<role>.<knob>.requested=<value>
    tuning.<role>.<knob>.applied=<value>
    tuning.<role>.<knob>.state=Requested|Applied|Degraded|Failed
    tuning.<role>.<knob>.reason=<text>

``<knob>`` is one of ``cpu_pinning``, ``mlockall``, ``sched_fifo``, ``wait``; ``<role>`` is a stage
id or role name (``[A-Za-z0-9._-]``, no dots in practice: a dot in a role name is rejected).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .._errors import UsageError
from .._fileio import read_regular_file
from .._json import write_bytes_atomic
from ..obs.events import LOG_FORMATS
from ..obs.metrics import parse_listen

__all__ = [
    "KNOBS",
    "PROFILES",
    "STATES",
    "WAITS",
    "KnobState",
    "RuntimeConfig",
    "decode_runtime_config",
    "encode_runtime_config",
    "parse_cpu_list",
    "read_runtime_config",
    "write_runtime_config",
]

CONFIG_VERSION = 1
PROFILES = ("default", "low-latency", "isolated-core")
WAITS = ("spin", "yield", "backoff", "block")
FSYNCS = ("none", "segment", "always")
KNOBS = ("cpu_pinning", "mlockall", "sched_fifo", "wait")
STATES = ("Requested", "Applied", "Degraded", "Failed")
_KNOB_FIELDS = ("requested", "applied", "state", "reason")
_ROLE = re.compile(r"^[A-Za-z0-9_\-]+$")
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class KnobState:
    """One tuning knob of one role: what was asked, what the host gave, and why."""

    knob: str
    requested: str
    applied: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class RuntimeConfig:
    """A decoded runtime_config.txt. ``None`` means "not set here" (the profile decides)."""

    tuning: str | None = None
    wait: str | None = None
    cpus: tuple[int, ...] | None = None
    mlockall: bool | None = None
    sched_fifo_priority: int | None = None
    env: str | None = None
    ring_path: str | None = None
    lane_path: str | None = None
    journal_dir: str | None = None
    journal_fsync: str | None = None
    metrics: str | None = None
    log_format: str | None = None
    #: role -> knob states, in the order they were recorded.
    effective: Mapping[str, tuple[KnobState, ...]] = field(default_factory=dict)

    def with_effective(self, role: str, knobs: tuple[KnobState, ...]) -> RuntimeConfig:
        merged = dict(self.effective)
        merged[role] = knobs
        return replace(self, effective=merged)


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """``"0,2-4"`` -> ``(0, 2, 3, 4)``; the kernel's cpu-list syntax (``isolated``, ``isolcpus``)."""
    cpus: set[int] = set()
    for raw in text.strip().split(","):
        part = raw.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad CPU list element {part!r}")
        start, end = int(lo), int(hi) if sep else int(lo)
        if end < start:
            raise ValueError(f"bad CPU range {part!r}")
        cpus.update(range(start, end + 1))
    return tuple(sorted(cpus))


def _fmt_cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def _bool(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError("must be true or false")


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def conv(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {'|'.join(choices)}")
        return text

    return conv


def _prio(text: str) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise ValueError("must be a decimal integer 0..99")
    value = int(text)
    if value > 99:
        raise ValueError("must be 0..99")
    return value


def _listen(text: str) -> str:
    parse_listen(text)
    return text


def _path(text: str) -> str:
    if not text:
        raise ValueError("must be a non-empty path")
    return text


_SCALARS: dict[str, tuple[str, Callable[[str], object]]] = {
    "runtime.tuning": ("tuning", _choice(PROFILES)),
    "runtime.wait": ("wait", _choice(WAITS)),
    "runtime.cpus": ("cpus", parse_cpu_list),
    "runtime.mlockall": ("mlockall", _bool),
    "runtime.sched_fifo_priority": ("sched_fifo_priority", _prio),
    "runtime.env": ("env", _choice(("dev", "staging", "prod"))),
    "runtime.ring_path": ("ring_path", _path),
    "runtime.lane_path": ("lane_path", _path),
    "runtime.journal_dir": ("journal_dir", _path),
    "runtime.journal_fsync": ("journal_fsync", _choice(FSYNCS)),
    "runtime.metrics": ("metrics", _listen),
    "runtime.log_format": ("log_format", _choice(LOG_FORMATS)),
}


def decode_runtime_config(data: bytes | str, *, path: str = "runtime_config.txt") -> RuntimeConfig:
    """Decode runtime_config.txt text; any problem is a UsageError naming the line and key."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    values: dict[str, Any] = {}
    seen: dict[str, int] = {}
    effective: dict[str, dict[str, dict[str, str]]] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UsageError(f"{path}: line {lineno}: expected key=value")
        if key in seen:
            raise UsageError(f"{path}: line {lineno}: duplicate key `{key}` (first on line {seen[key]})")
        seen[key] = lineno
        if key == "config.v":
            if value != str(CONFIG_VERSION):
                newer = value.isdigit() and int(value) > CONFIG_VERSION
                why = "is newer than this byteor supports" if newer else "is not a known version"
                raise UsageError(
                    f"{path}: line {lineno}: config.v={value} {why} ({CONFIG_VERSION}) at `config.v`")
            continue
        if key in _SCALARS:
            attr, conv = _SCALARS[key]
            try:
                values[attr] = conv(value)
            except ValueError as exc:
                raise UsageError(f"{path}: line {lineno}: {exc} at `{key}` (found {value!r})") from None
            continue
        parts = key.split(".")
        if len(parts) == 4 and parts[0] == "tuning" and parts[2] in KNOBS and parts[3] in _KNOB_FIELDS:
            role, knob, fld = parts[1], parts[2], parts[3]
            if not _ROLE.match(role):
                raise UsageError(f"{path}: line {lineno}: bad role name at `{key}`")
            if fld == "state" and value not in STATES:
                raise UsageError(f"{path}: line {lineno}: must be one of {'|'.join(STATES)} at `{key}`")
            effective.setdefault(role, {}).setdefault(knob, {})[fld] = value
            continue
        raise UsageError(f"{path}: line {lineno}: unknown key `{key}`")
    eff: dict[str, tuple[KnobState, ...]] = {}
    for role, knobs in effective.items():
        states = []
        for knob, fields in knobs.items():
            missing = [f for f in ("requested", "applied", "state") if f not in fields]
            if missing:
                raise UsageError(f"{path}: missing `tuning.{role}.{knob}.{missing[0]}`")
            states.append(KnobState(knob, fields["requested"], fields["applied"], fields["state"],
                                    fields.get("reason", "")))
        eff[role] = tuple(states)
    return RuntimeConfig(effective=eff, **values)


def encode_runtime_config(config: RuntimeConfig) -> str:
    """Canonical text: ``config.v`` first, then the set request keys, then the effective tuning."""
    lines = [f"config.v={CONFIG_VERSION}"]
    for key, (attr, _) in _SCALARS.items():
        value = getattr(config, attr)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = _fmt_cpus(value)
        else:
            text = str(value)
        lines.append(f"{key}={text}")
    for role, knobs in config.effective.items():
        if not _ROLE.match(role):
            raise UsageError(f"runtime_config: role name {role!r} cannot be written (use [A-Za-z0-9_-])")
        for ks in knobs:
            p = f"tuning.{role}.{ks.knob}"
            reason = ks.reason.replace("\n", " ")
            lines += [f"{p}.requested={ks.requested}", f"{p}.applied={ks.applied}", f"{p}.state={ks.state}",
                      f"{p}.reason={reason}"]
    return "".join(line + "\n" for line in lines)


def read_runtime_config(path: str | os.PathLike[str]) -> RuntimeConfig:
    """Read and decode a runtime_config.txt; a missing file is a UsageError (exit 2)."""
    p = os.fspath(path)
    try:
        raw = read_regular_file(p, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise UsageError(f"{p}: runtime config file does not exist") from None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read runtime config: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UsageError(f"{p}: runtime config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return decode_runtime_config(raw, path=p)
    except UnicodeDecodeError:
        raise UsageError(f"{p}: runtime config is not UTF-8") from None


def write_runtime_config(path: str | os.PathLike[str], config: RuntimeConfig) -> None:
    """Write the canonical text atomically."""
    write_bytes_atomic(path, encode_runtime_config(config).encode("utf-8"))
