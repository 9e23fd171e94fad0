"""Tuning profiles: a request, reported knob by knob as Requested / Applied / Degraded / Failed.

=============== ======================================================================
profile         knobs requested
=============== ======================================================================
default         wait=backoff; no pinning, no mlockall, no SCHED_FIFO (no privilege assumed)
low-latency     wait=spin; pin each role to one CPU of the affinity set; mlockall
isolated-core   wait=spin; pin each role to an isolated CPU; SCHED_FIFO priority 50; mlockall
=============== ======================================================================

:func:`apply_profile` is called once in each runtime process (a stage or role process, or the
``--sp`` process) before its loop starts.

CPU placement is balanced across the run: every process is told the run's process names
(``roles``) and computes the same :func:`plan_placements`, so the processes get distinct CPUs of
the pool (isolated CPUs, ``runtime.cpus``, or the affinity set) in role order while there are
enough, and only then share (round robin). A process that shares its CPU reports ``cpu_pinning``
``Degraded`` naming whom it shares with, and never spins there: its ``wait`` is ``Degraded`` to
``backoff``, so two spinning processes (SCHED_FIFO or not) never compete for one CPU. Without
``roles`` (a lone process, ``doctor``) the CPU is picked from the role name (``crc32``).

:func:`apply_profile` never raises for an under-provisioned host: a knob the host refuses is
``Failed`` with the reason (errno, the limit that caused it), a knob applied only in part is
``Degraded`` with what was applied instead. A malformed request (unknown profile, bad CPU)
is a :class:`~byteor.UsageError`: a wrong request and a weak host are different problems.

States: ``Requested`` = planned, not applied (:func:`plan_profile`, ``doctor --tuning``);
``Applied`` = in effect as asked (also for a knob the profile leaves off); ``Degraded`` = partly
applied; ``Failed`` = not applied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import resource
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import UsageError
from .._fileio import open_existing_private
from .runtime_config import KNOBS, PROFILES, WAITS, KnobState, RuntimeConfig, parse_cpu_list

__all__ = [
    "PROFILES",
    "Placement",
    "ProfileRequest",
    "TuningReport",
    "apply_profile",
    "isolated_cpus",
    "plan_placements",
    "plan_profile",
    "profile_request",
    "record_tuning",
    "tune_process",
]

MCL_CURRENT = 1
MCL_FUTURE = 2
DEFAULT_FIFO_PRIORITY = 50


@dataclass(frozen=True)
class ProfileRequest:
    """What a profile asks for, after runtime_config.txt overrides."""

    profile: str
    wait: str
    pinning: str  # "none" | "affinity" | "isolated"
    mlockall: bool
    sched_fifo_priority: int  # 0 = off


_PROFILE_TABLE: dict[str, ProfileRequest] = {
    "default": ProfileRequest("default", "backoff", "none", False, 0),
    "low-latency": ProfileRequest("low-latency", "spin", "affinity", True, 0),
    "isolated-core": ProfileRequest("isolated-core", "spin", "isolated", True, DEFAULT_FIFO_PRIORITY),
}


def profile_request(name: str, config: RuntimeConfig | None = None) -> ProfileRequest:
    """The request of profile ``name`` with the overrides of ``config`` (wait, mlockall, priority)."""
    if name not in _PROFILE_TABLE:
        raise UsageError(f"unknown tuning profile {name!r}; known: {', '.join(PROFILES)}")
    req = _PROFILE_TABLE[name]
    if config is None:
        return req
    return ProfileRequest(
        profile=name,
        wait=config.wait or req.wait,
        pinning=req.pinning,
        mlockall=req.mlockall if config.mlockall is None else config.mlockall,
        sched_fifo_priority=(
            req.sched_fifo_priority if config.sched_fifo_priority is None else config.sched_fifo_priority
        ),
    )


@dataclass(frozen=True)
class TuningReport:
    """The effective tuning of one process: one :class:`KnobState` per knob, in ``KNOBS`` order."""

    profile: str
    role: str
    pid: int
    knobs: tuple[KnobState, ...]

    @property
    def ok(self) -> bool:
        """No knob Failed."""
        return all(k.state != "Failed" for k in self.knobs)

    @property
    def wait(self) -> str:
        """The wait strategy the process should actually use."""
        for k in self.knobs:
            if k.knob == "wait":
                return k.applied
        return "backoff"

    def knob(self, name: str) -> KnobState:
        for k in self.knobs:
            if k.knob == name:
                return k
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "role": self.role,
            "pid": self.pid,
            "knobs": [
                {
                    "knob": k.knob,
                    "requested": k.requested,
                    "applied": k.applied,
                    "state": k.state,
                    "reason": k.reason,
                }
                for k in self.knobs
            ],
        }

    def log_lines(self) -> list[str]:
        """One line per knob for the run log: ``tuning role=x knob=wait state=Applied ...``."""
        return [
            f"tuning profile={self.profile} role={self.role} pid={self.pid} knob={k.knob} "
            f"requested={k.requested} applied={k.applied} state={k.state}"
            + (f" reason={k.reason}" if k.reason else "")
            for k in self.knobs
        ]

    def into_config(self, config: RuntimeConfig | None = None) -> RuntimeConfig:
        """``config`` (or a new one) with this report recorded as ``tuning.<role>.*`` keys."""
        base = config or RuntimeConfig(tuning=self.profile)
        return base.with_effective(_config_role(self.role), self.knobs)


def _config_role(role: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in role) or "process"


def isolated_cpus() -> tuple[int, ...]:
    """CPUs the kernel isolated (``/sys/devices/system/cpu/isolated``), empty when none."""
    try:
        text = Path("/sys/devices/system/cpu/isolated").read_text()
    except OSError:
        return ()
    try:
        return parse_cpu_list(text)
    except ValueError:
        return ()


def _pick_cpu(role: str, candidates: Sequence[int]) -> int:
    # A stable choice (crc32, never hash()) so a restarted role lands on the same CPU.
    return sorted(candidates)[zlib.crc32(role.encode("utf-8")) % len(candidates)]


@dataclass(frozen=True)
class Placement:
    """Where one process of a run is pinned: its CPU and the other processes pinned there."""

    cpu: int
    shares_with: tuple[str, ...]
    processes: int
    cpus: int


def plan_placements(roles: Sequence[str], pool: Sequence[int]) -> dict[str, Placement]:
    """Each of ``roles`` (in order) on the next CPU of ``pool`` (sorted): distinct CPUs while there
    are enough, round robin after. Deterministic, so every process of a run (and a restarted one)
    computes the same placement for itself without talking to the others."""
    cpus = sorted(set(pool))
    if not cpus:
        return {}
    names = list(dict.fromkeys(roles))
    cpu_of = {role: cpus[i % len(cpus)] for i, role in enumerate(names)}
    return {role: Placement(cpu, tuple(r for r in names if r != role and cpu_of[r] == cpu), len(names), len(cpus))
            for role, cpu in cpu_of.items()}


def _memlock_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return soft


def _fmt_limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else f"{value} bytes"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mlockall(flags: int) -> int:
    """0 on success, else the errno."""
    libc = _libc()
    if libc.mlockall(ctypes.c_int(flags)) == 0:
        return 0
    return ctypes.get_errno() or errno.EPERM


def _has_cap(bit: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


CAP_IPC_LOCK = 14
CAP_SYS_NICE = 23


def plan_profile(
    name: str, *, role: str = "process", cpu: int | None = None, config: RuntimeConfig | None = None
) -> TuningReport:
    """The knobs profile ``name`` would request, every one in state ``Requested`` (nothing applied)."""
    req = profile_request(name, config)
    pin = (
        "off"
        if req.pinning == "none" and cpu is None
        else (f"cpu {cpu}" if cpu is not None else f"one {req.pinning} cpu")
    )
    knobs = (
        KnobState("cpu_pinning", pin, "-", "Requested"),
        KnobState("mlockall", "on" if req.mlockall else "off", "-", "Requested"),
        KnobState(
            "sched_fifo", str(req.sched_fifo_priority) if req.sched_fifo_priority else "off", "-", "Requested"
        ),
        KnobState("wait", req.wait, "-", "Requested"),
    )
    return TuningReport(name, role, os.getpid(), knobs)


def apply_profile(
    name: str,
    *,
    role: str,
    cpu: int | None = None,
    config: RuntimeConfig | None = None,
    spinning_peers: int | None = None,
    roles: Sequence[str] | None = None,
) -> TuningReport:
    """Apply profile ``name`` to the calling process and report every knob.

    ``role`` names the process (stage id / role name). ``roles`` (every pinned process of the run,
    ``role`` among them) balances the CPUs across the run (:func:`plan_placements`); without it the
    CPU is picked from ``role`` alone. ``cpu`` pins to that CPU instead. ``config`` overrides the
    profile (``runtime.cpus``, ``runtime.wait``, ``runtime.mlockall``,
    ``runtime.sched_fifo_priority``). ``spinning_peers`` is the number of processes of the pipeline
    that will spin: more spinners than usable CPUs degrades ``spin`` to
    ``backoff``. Raises :class:`UsageError` only for a malformed request (unknown profile, a CPU
    outside the machine); never for what the host refuses.
    """
    req = profile_request(name, config)
    pid = os.getpid()
    knobs: list[KnobState] = []
    allowed = tuple(sorted(os.sched_getaffinity(0)))
    if cpu is not None and cpu not in range(os.cpu_count() or 1):
        raise UsageError(f"tuning: cpu {cpu} does not exist on this host (0..{(os.cpu_count() or 1) - 1})")
    usable = allowed
    shared: Placement | None = None  # set when this process shares its CPU with others of the run

    # CPU pinning ---------------------------------------------------------------------------------
    if req.pinning == "none" and cpu is None:
        knobs.append(KnobState("cpu_pinning", "off", "off", "Applied", "profile does not pin"))
    else:
        pool: tuple[int, ...]
        state, reason = "Applied", ""
        if cpu is not None:
            pool, requested = (cpu,), f"cpu {cpu}"
        elif config is not None and config.cpus:
            pool, requested = config.cpus, f"one of cpus {','.join(map(str, config.cpus))}"
        elif req.pinning == "isolated":
            iso = isolated_cpus()
            requested = "one isolated cpu"
            if iso:
                pool = iso
            else:
                pool, state = allowed, "Degraded"
                reason = "no isolated CPUs on this host; pinned to a shared CPU"
        else:
            pool, requested = allowed, "one cpu of the affinity set"
        pool_ok = tuple(c for c in pool if c in allowed)
        if not pool_ok:
            knobs.append(
                KnobState(
                    "cpu_pinning",
                    requested,
                    "off",
                    "Failed",
                    f"cpus {','.join(map(str, pool))} are outside this process's affinity "
                    f"set {','.join(map(str, allowed))}",
                )
            )
        else:
            placement = plan_placements(roles, pool_ok).get(role) if roles and cpu is None else None
            target = placement.cpu if placement is not None else _pick_cpu(role, pool_ok)
            try:
                os.sched_setaffinity(0, {target})
            except OSError as exc:
                knobs.append(
                    KnobState("cpu_pinning", requested, "off", "Failed", f"sched_setaffinity: {exc.strerror}")
                )
            else:
                usable = (target,)
                if placement is not None and placement.shares_with:
                    shared = placement
                    others = ", ".join(repr(r) for r in placement.shares_with)
                    why = (f"{placement.processes} processes on {placement.cpus} cpu(s): shares cpu {target} "
                           f"with {others}")
                    state, reason = "Degraded", f"{reason}; {why}" if reason else why
                knobs.append(KnobState("cpu_pinning", requested, f"cpu {target}", state, reason))

    # mlockall --------------------------------------------------------------------------------------
    if not req.mlockall:
        knobs.append(KnobState("mlockall", "off", "off", "Applied", "profile does not lock memory"))
    else:
        limit = _memlock_limit()
        privileged = _has_cap(CAP_IPC_LOCK)
        if limit == resource.RLIM_INFINITY or privileged:
            err = _mlockall(MCL_CURRENT | MCL_FUTURE)
            if err == 0:
                knobs.append(
                    KnobState(
                        "mlockall",
                        "current+future",
                        "current+future",
                        "Applied",
                        "" if limit == resource.RLIM_INFINITY else "via CAP_IPC_LOCK",
                    )
                )
            else:
                knobs.append(
                    KnobState(
                        "mlockall",
                        "current+future",
                        "off",
                        "Failed",
                        f"mlockall: {os.strerror(err)} (RLIMIT_MEMLOCK {_fmt_limit(limit)})",
                    )
                )
        else:
            # MCL_FUTURE under a finite limit would make later allocations fail: lock what exists only.
            err = _mlockall(MCL_CURRENT)
            if err == 0:
                knobs.append(
                    KnobState(
                        "mlockall",
                        "current+future",
                        "current",
                        "Degraded",
                        f"MCL_FUTURE skipped: RLIMIT_MEMLOCK is {_fmt_limit(limit)}",
                    )
                )
            else:
                knobs.append(
                    KnobState(
                        "mlockall",
                        "current+future",
                        "off",
                        "Failed",
                        f"mlockall: {os.strerror(err)} (RLIMIT_MEMLOCK {_fmt_limit(limit)}); "
                        "raise the limit (ulimit -l / LimitMEMLOCK=) or grant CAP_IPC_LOCK",
                    )
                )

    # SCHED_FIFO ------------------------------------------------------------------------------------
    prio = req.sched_fifo_priority
    if not prio:
        knobs.append(KnobState("sched_fifo", "off", "off", "Applied", "profile uses the normal scheduler"))
    else:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
        except OSError as exc:
            rt_soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
            knobs.append(
                KnobState(
                    "sched_fifo",
                    str(prio),
                    "off",
                    "Failed",
                    f"sched_setscheduler: {exc.strerror} (RLIMIT_RTPRIO {rt_soft}, "
                    f"CAP_SYS_NICE {'yes' if _has_cap(CAP_SYS_NICE) else 'no'})",
                )
            )
        else:
            knobs.append(KnobState("sched_fifo", str(prio), str(prio), "Applied"))

    # wait strategy ---------------------------------------------------------------------------------
    if req.wait not in WAITS:  # pragma: no cover - profile_request guarantees it
        raise UsageError(f"tuning: unknown wait strategy {req.wait!r}")
    if req.wait == "spin" and shared is not None:
        knobs.append(
            KnobState(
                "wait",
                "spin",
                "backoff",
                "Degraded",
                f"shares cpu {shared.cpu} with {', '.join(repr(r) for r in shared.shares_with)}; "
                "a spinning process would starve them",
            )
        )
    elif req.wait == "spin" and spinning_peers is not None and spinning_peers > len(allowed):
        knobs.append(
            KnobState(
                "wait",
                "spin",
                "backoff",
                "Degraded",
                f"{spinning_peers} spinning processes on {len(allowed)} usable CPUs; "
                "spinning would starve them",
            )
        )
    else:
        knobs.append(
            KnobState(
                "wait",
                req.wait,
                req.wait,
                "Applied",
                f"pinned to {len(usable)} cpu" if req.wait == "spin" else "",
            )
        )
    assert tuple(k.knob for k in knobs) == KNOBS
    return TuningReport(name, role, pid, tuple(knobs))


def record_tuning(path: str | os.PathLike[str], report: TuningReport) -> RuntimeConfig:
    """Add ``report`` as ``tuning.<role>.*`` keys to the runtime_config.txt at ``path`` (created
    when missing) and return the new config. Safe when several stage processes record at once: the
    read-modify-write holds an exclusive ``flock`` on ``<path>.lock``.
    """
    from .runtime_config import decode_runtime_config, write_runtime_config

    p = os.fspath(path)
    lock_fd = open_existing_private(p + ".lock", os.O_RDWR)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            with open(p, "rb") as fh:
                current = decode_runtime_config(fh.read(), path=p)
        except FileNotFoundError:
            current = RuntimeConfig(tuning=report.profile)
        updated = report.into_config(current)
        write_runtime_config(p, updated)
        return updated
    finally:
        os.close(lock_fd)


def tune_process(
    profile: str | None,
    *,
    role: str,
    config: RuntimeConfig | None = None,
    cpu: int | None = None,
    spinning_peers: int | None = None,
    record_to: str | None = None,
    log: Callable[[str], None] | None = None,
    roles: Sequence[str] | None = None,
) -> TuningReport:
    """What a runtime process calls once before its loop: apply the profile (``profile``, else
    ``config.tuning``, else ``default``), log one line per knob, and record the knobs in the
    runtime_config.txt at ``record_to`` when given. Returns the report (use ``report.wait``)."""
    name = profile or (config.tuning if config is not None and config.tuning else "default")
    report = apply_profile(name, role=role, cpu=cpu, config=config, spinning_peers=spinning_peers, roles=roles)
    if log is not None:
        for line in report.log_lines():
            log(line)
    if record_to is not None:
        record_tuning(record_to, report)
    return report
