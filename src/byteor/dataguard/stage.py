"""The ``dataguard:<profile>`` stage family: a DataGuard run inside a pipeline stage.

Where profiles live: ``ctx.extra["dataguard_profiles"]`` (a directory) when the caller sets it, else
``$BYTEOR_DATAGUARD_PROFILES``, else ``dataguard/`` next to the spec (``ctx.spec_dir``). The profile
``pii`` is the file ``<dir>/pii.json``::

    {"registry_root": "registry",        # relative paths are relative to the profile's directory
     "schema_id": 7, "msg_type": 1, "required_version": 2,
     "mode": "mapkv",                    # or "row"
     "flow": "fused",                    # check | redact | fused            (default fused)
     "rules": ["email:mask=1:4:*", "phone:hash"],
     "rules_file": "rules.txt",          # optional, appended after "rules"
     "hash_key_env": "PII_HASH_KEY",     # optional; when named, the variable must be set
     "on_reject": "drop",                # drop | forward_input              (default drop)
     "report": "reports/pii.kv",         # default <dir>/<profile>.report.kv
     "cost_sample": 0}                   # time every Nth message (cost.* in the report)

Resolution happens once at startup: an unreadable profile, a bad key, a registry that cannot serve the
tuple or a malformed rule raises a :class:`~byteor.DataGuardError` naming the profile file. The stage
function rewrites the slot in place (``modifies=True``) and returns the new length, the old one, or
``DROP``.

``close`` writes the report KV v1. Several processes of one run may resolve the same profile (the
``run`` parent resolves every stage before it starts them, each shard's stage process resolves its own):
under an exclusive lock on the report's directory, a process that saw no message leaves a report written
during this run alone, and one that saw messages adds its counters to such a report; a report older than
the process's start is replaced. Counters of a stage process killed before ``close`` are lost from the
report (its restarted successor counts from zero there).

Live counters: in a stage process of a multi-process run the report's counters are also published
into the process's row of the run's counters file (``dataguard_<counter>`` words,
:mod:`byteor.obs.counters`) about every 250 ms by a side thread and once more at ``close``, added to
what earlier processes of the same row published: the metrics survive a restart (less the last
quarter second of a killed process). The stage function itself pays nothing for it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from typing import Any

from .._fileio import make_dirs
from .._stage import DROP, ResolvedStage, StageContext
from ..obs import counters
from .engine import FLOWS, FORWARD_INPUT, MAX_ENVELOPE, ON_REJECT, DataGuard, GuardConfig
from .envelope import CODEC_IDS
from .errors import DataGuardError, RegistryError, RuleError
from .report import COUNTERS, DataGuardReport, parse_report_kv, write_report
from .rules import DEFAULT_HASH_KEY_ENV, RuleSet, load_rules_file, parse_rules

__all__ = ["PROFILE_KEYS", "load_profile", "merge_report", "profile_path", "resolve_dataguard"]

PROFILE_KEYS = frozenset({
    "registry_root", "schema_id", "msg_type", "required_version", "mode", "flow", "rules", "rules_file",
    "hash_key_env", "on_reject", "report", "cost_sample",
})
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_LIMITS = {"schema_id": 2**64 - 1, "msg_type": 2**32 - 1, "required_version": 0xFFFF, "cost_sample": 2**31}
assert counters.DATAGUARD_COUNTERS == COUNTERS  # the counters file keeps the report's counters in order
_WORDS = [counters.WORDS[f"dataguard_{name}"] for name in COUNTERS]


def profile_path(profile: str, ctx: StageContext) -> str:
    """The file a profile name refers to (the name is a plain file stem, never a path)."""
    if not _NAME.fullmatch(profile):
        raise DataGuardError(f"dataguard profile {profile!r} must match [A-Za-z0-9_-][A-Za-z0-9._-]*")
    base = ctx.extra.get("dataguard_profiles") or os.environ.get("BYTEOR_DATAGUARD_PROFILES") \
        or os.path.join(ctx.spec_dir, "dataguard")
    return os.path.join(str(base), f"{profile}.json")


def load_profile(path: str, *, mode: str | None = None) -> tuple[GuardConfig, str]:
    """Read a profile file into the engine's config and the report path (relative paths resolved).

    ``mode`` (``byteor-dataguard run --mode``) overrides the profile's payload codec."""
    try:
        with open(path, "rb") as fh:
            raw: Any = json.loads(fh.read().decode("utf-8"))
    except OSError as exc:
        raise DataGuardError(f"dataguard profile {path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataGuardError(f"dataguard profile {path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DataGuardError(f"dataguard profile {path}: must be a JSON object")
    unknown = sorted(set(raw) - PROFILE_KEYS)
    if unknown:
        raise DataGuardError(f"dataguard profile {path}: unknown key {unknown[0]!r}")
    base = os.path.dirname(os.path.abspath(path))

    def need(key: str, kind: type, default: Any = None) -> Any:
        if key not in raw:
            if default is None:
                raise DataGuardError(f"dataguard profile {path}: missing key {key!r}")
            return default
        v = raw[key]
        if not isinstance(v, kind) or isinstance(v, bool) != (kind is bool):
            raise DataGuardError(f"dataguard profile {path}: {key!r} must be a {kind.__name__}")
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= _LIMITS[key]:
            raise DataGuardError(f"dataguard profile {path}: {key!r}={v} is out of range")
        return v

    def rel(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base, p)

    mode = need("mode", str) if mode is None else mode
    flow = need("flow", str, "fused")
    on_reject = need("on_reject", str, "drop")
    for key, value, allowed in (("mode", mode, tuple(CODEC_IDS)), ("flow", flow, FLOWS),
                                ("on_reject", on_reject, ON_REJECT)):
        if value not in allowed:
            raise DataGuardError(f"dataguard profile {path}: {key!r} must be one of {', '.join(allowed)}")
    rule_texts = need("rules", list, [])
    if not all(isinstance(r, str) for r in rule_texts):
        raise DataGuardError(f"dataguard profile {path}: 'rules' must be a list of strings")
    try:
        rules = parse_rules(rule_texts)
        if "rules_file" in raw:
            rules += load_rules_file(rel(need("rules_file", str)))
        named = "hash_key_env" in raw
        rule_set = RuleSet(rules, hash_key_env=need("hash_key_env", str, DEFAULT_HASH_KEY_ENV),
                           hash_key_required=named)
    except RuleError as exc:
        raise RuleError(f"dataguard profile {path}: {exc}") from None
    profile = os.path.splitext(os.path.basename(path))[0]
    report = rel(need("report", str, f"{profile}.report.kv"))
    config = GuardConfig(
        registry_root=rel(need("registry_root", str)), schema_id=need("schema_id", int),
        msg_type=need("msg_type", int), required_version=need("required_version", int), mode=mode,
        flow=flow, rules=rule_set, on_reject=on_reject, cost_sample=need("cost_sample", int, 0),
        capacity=MAX_ENVELOPE)
    return config, report


def resolve_dataguard(key: str, ctx: StageContext) -> ResolvedStage:
    """Resolve ``dataguard:<profile>`` once at startup (errors name the profile file)."""
    family, _, profile = key.partition(":")
    if family != "dataguard" or not profile:
        raise DataGuardError(f"stage key {key!r} is not dataguard:<profile>")
    path = profile_path(profile, ctx)
    override = ctx.extra.get("dataguard_mode")
    config, report_path = load_profile(path, mode=str(override) if override else None)
    try:
        guard = DataGuard(config)
    except (RegistryError, RuleError) as exc:
        raise type(exc)(f"dataguard profile {path}: {exc}") from None
    scratch = bytearray(MAX_ENVELOPE)
    views: dict[int, memoryview] = {}
    process_into = guard.process_into

    def stage(slot: memoryview, length: int) -> int:
        size = len(slot)
        out = views.get(size)
        if out is None:  # once per slot size (one per ring), never per message
            out = views[size] = memoryview(scratch)[:min(size, MAX_ENVELOPE)]
        n = process_into(slot[:length], out)
        if n == FORWARD_INPUT:
            return length
        if n < 0:
            return DROP
        slot[:n] = out[:n]
        return n

    closed = False
    started_ns = time.time_ns() - 20_000_000  # file mtimes use the coarse clock (up to a jiffy behind)
    publish, stop_publishing = _live_counters(guard)

    def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            stop_publishing()
            publish()
            merge_report(report_path, guard.report(), started_ns)

    return ResolvedStage(key=key, fn=stage, modifies=True, family="dataguard", target=profile, close=close)


def _live_counters(guard: DataGuard) -> tuple[Any, Any]:
    """``(publish, stop)`` for this process's counters row: publish writes what earlier processes of
    the row left plus this guard's counts; a side thread calls it until ``stop``. Nothing happens in
    a process without a row in a counters file (the parent resolving stages, ``--sp``)."""
    row = counters.current()
    if not row.live:
        return (lambda: None), (lambda: None)
    base = [row.get(w) for w in _WORDS]

    def publish() -> None:
        counts = guard.counts
        for w, b, name in zip(_WORDS, base, COUNTERS, strict=True):
            row.set(w, b + counts[name])

    return publish, counters.every(publish)


def _same_run_shape(a: DataGuardReport, b: DataGuardReport) -> bool:
    return (a.flow, a.registry_root, a.schema_id, a.msg_type, a.required_version, a.mode, a.rules,
            a.cost_sample_every) == (b.flow, b.registry_root, b.schema_id, b.msg_type, b.required_version,
                                     b.mode, b.rules, b.cost_sample_every)


def merge_report(path: str, report: DataGuardReport, started_ns: int) -> None:
    """Write ``report`` to ``path``, adding the counters of a report written since ``started_ns``.

    The read-add-write runs under ``flock`` on the report's directory, so concurrent stage processes
    of one run never lose each other's counts.
    """
    directory = make_dirs(os.path.dirname(os.path.abspath(path)))
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        previous = None
        try:
            st = os.stat(path)
            if st.st_mtime_ns >= started_ns:
                with open(path, encoding="utf-8") as fh:
                    previous = parse_report_kv(fh.read(), where=path)
        except (FileNotFoundError, ValueError):
            previous = None
        if previous is not None and _same_run_shape(previous, report):
            if report.counts["seen"] == 0:
                return
            for k, v in previous.counts.items():
                report.counts[k] = report.counts.get(k, 0) + v
            report.rule_counts = [(a + c, b + d) for (a, b), (c, d)
                                  in zip(report.rule_counts, previous.rule_counts, strict=True)]
            if report.cost_sample_every:
                cost, old = report.cost, previous.cost
                for k in ("samples", "ns_total", "bytes_in", "bytes_out"):
                    cost[k] = cost.get(k, 0) + old.get(k, 0)
                cost["ns_max"] = max(cost.get("ns_max", 0), old.get("ns_max", 0))
                cost["ns_avg"] = cost["ns_total"] // cost["samples"] if cost["samples"] else 0
        write_report(path, report)
    finally:
        os.close(dir_fd)
