"""``doctor``: is this host fit to run a pipeline (and a tuning profile)? Real probes, no guesses.

Each check yields a :class:`Check` with ``status`` ``pass`` / ``warn`` / ``fail``, a ``detail`` with
the numbers it saw and a ``fix``. Probes that change process state (``mlockall``, ``SCHED_FIFO``) run
in a short-lived child process, never in the caller. :func:`run_doctor` runs them all; the
verb exits 1 when any check failed.

What is a failure depends on the request: ``mlockall`` that does not work is a warning under the
``default`` profile and a failure under ``low-latency`` and ``isolated-core``; a spec whose rings do
not fit in ``/dev/shm``'s free space is always a failure.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._errors import ApprovalError, UsageError
from .._formats import parse_rfc3339
from ..policy.approvals import decode_credential, read_credential, required_capabilities, verify_credential
from ..policy.decisions import policy_table
from ..policy.keys import KeySet, load_key_set
from ..spec.kv import spec_hash
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1
from .runtime_config import KnobState
from .tuning import CAP_IPC_LOCK, CAP_SYS_NICE, _has_cap, isolated_cpus, profile_request

__all__ = [
    "Check",
    "DoctorOptions",
    "DoctorReport",
    "run_doctor",
    "spec_shm_bytes",
]

STATUSES = ("pass", "warn", "fail")
SHM_DIR = "/dev/shm"
BYTEOR_SHM_DIR = "/dev/shm/byteor"
DEFAULT_JOURNAL_DIR = "/var/tmp/byteor"
#: Header and cursor lines of one ring file, an upper bound used for sizing (the native layout is
#: documented by byteor.shm; the exact figure only matters against free space, so round up).
RING_OVERHEAD_BYTES = 64 * 1024
KEYSET_STALE_SECONDS = 24 * 3600
APPROVAL_SOON_SECONDS = 3600
PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]
    tuning: str
    #: The profile applied for real in a throw-away child process: one KnobState per knob.
    knobs: tuple[KnobState, ...] = ()

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tuning": self.tuning,
            "counts": self.counts(),
            "checks": [c.to_json() for c in self.checks],
            "tuning_knobs": [
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


@dataclass(frozen=True)
class DoctorOptions:
    spec: PipelineSpecV1 | None = None
    spec_path: str | None = None
    tuning: str = "default"
    wait: str | None = None
    posture: str = "dev"
    shm_dir: str = SHM_DIR
    byteor_shm_dir: str = BYTEOR_SHM_DIR
    journal_dir: str | None = None
    journal_fsync: str | None = None
    approval: str | None = None
    key_set: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _mib(n: int | float) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def _slot_stride(slot_bytes: int) -> int:
    # u32 length + u32 flags + payload, 8-aligned (byteor.shm ring layout).
    return (8 + slot_bytes + 7) // 8 * 8


def spec_shm_bytes(spec: PipelineSpecV1) -> int:
    """Bytes of shared memory the spec's rings and lanes need (journal lanes live on disk)."""
    if isinstance(spec, SingleRingSpecV1):
        per_ring = spec.capacity * _slot_stride(spec.slot_bytes) + RING_OVERHEAD_BYTES
        # Per-consumer scratch slots for crash-atomic modification (stages + egress).
        per_ring += (len(spec.stages) + 1) * _slot_stride(spec.slot_bytes)
        return spec.shards * per_ring
    total = 0
    for lane in spec.lanes:
        if lane.kind == "journal":
            continue
        total += (lane.capacity or 0) * _slot_stride(lane.slot_bytes) + RING_OVERHEAD_BYTES
    return total


def _journal_bytes(spec: PipelineSpecV1 | None) -> int:
    if not isinstance(spec, LaneGraphSpecV1):
        return 0
    return sum(2 * (lane.segment_bytes or 0) for lane in spec.lanes if lane.kind == "journal")


def _participants(spec: PipelineSpecV1 | None) -> int:
    if spec is None:
        return 0
    if isinstance(spec, SingleRingSpecV1):
        return spec.shards * (len(spec.stages) + 1) + 1  # stages + egress per ring, one producer
    return len(spec.roles) + sum(1 for e in spec.endpoints)


def _probe(code: str) -> tuple[bool, str]:
    """Run ``code`` in a fresh interpreter; (exit 0, last stderr/stdout line)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", code],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"probe timed out after {PROBE_TIMEOUT:.0f} s"
    out = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return proc.returncode == 0, out[-1] if out else ""


_MLOCK_PROBE = """
import ctypes, ctypes.util, os, sys
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
if libc.mlockall(3) != 0:
    print("mlockall failed: " + os.strerror(ctypes.get_errno())); sys.exit(1)
libc.munlockall()
print("mlockall ok")
"""

_FIFO_PROBE = """
import os, sys
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
except OSError as exc:
    print("sched_setscheduler(SCHED_FIFO, 1) failed: " + exc.strerror); sys.exit(1)
os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
print("SCHED_FIFO ok")
"""


def _fmt_limit(v: int) -> str:
    return "unlimited" if v == resource.RLIM_INFINITY else f"{v} bytes"


def check_memlock(opts: DoctorOptions) -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    need = spec_shm_bytes(opts.spec) if opts.spec is not None else 0
    works, why = _probe(_MLOCK_PROBE)
    cap = _has_cap(CAP_IPC_LOCK)
    wants = profile_request(opts.tuning).mlockall
    detail = f"RLIMIT_MEMLOCK soft {_fmt_limit(soft)}, hard {_fmt_limit(hard)}; {why}"
    if cap:
        detail += " (CAP_IPC_LOCK held: the limit does not apply to this user)"
    fix = (
        "raise the limit: `ulimit -l unlimited`, systemd `LimitMEMLOCK=infinity`, or "
        "/etc/security/limits.conf `memlock`"
    )
    if not works:
        return Check("memlock", "fail" if wants else "warn", detail, fix)
    low = soft != resource.RLIM_INFINITY and soft < max(need, 1) and not cap
    if soft == 0 or low:
        why_low = "is 0" if soft == 0 else f"is below the spec's {_mib(need)}"
        return Check(
            "memlock", "fail" if (wants and not cap) else "warn", detail + f"; the limit {why_low}", fix
        )
    return Check("memlock", "pass", detail)


def check_rt_sched(opts: DoctorOptions) -> Check:
    works, why = _probe(_FIFO_PROBE)
    rt_soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    detail = f"{why}; RLIMIT_RTPRIO {rt_soft}; CAP_SYS_NICE {'yes' if _has_cap(CAP_SYS_NICE) else 'no'}"
    if works:
        return Check("rt_sched", "pass", detail)
    wants = profile_request(opts.tuning).sched_fifo_priority > 0
    return Check(
        "rt_sched",
        "fail" if wants else "warn",
        detail,
        "grant CAP_SYS_NICE or raise RLIMIT_RTPRIO (systemd `LimitRTPRIO=`, limits.conf `rtprio`)",
    )


def check_cpus(opts: DoctorOptions) -> Check:
    count = os.cpu_count() or 1
    allowed = sorted(os.sched_getaffinity(0))
    iso = isolated_cpus()
    detail = (
        f"{count} CPUs online, affinity {','.join(map(str, allowed))}, "
        f"isolated {','.join(map(str, iso)) or 'none'}"
    )
    try:
        cmdline = Path("/proc/cmdline").read_text()
    except OSError:
        cmdline = ""
    if "isolcpus" in cmdline:
        detail += " (isolcpus on the kernel command line)"
    req = profile_request(opts.tuning)
    if req.pinning == "isolated" and not iso:
        return Check(
            "cpus",
            "fail",
            detail + f"; profile {opts.tuning} needs isolated CPUs",
            "boot with isolcpus=/nohz_full= or a cpuset for the pipeline; or use --tuning=low-latency",
        )
    if req.pinning == "affinity" and len(allowed) < 2:
        return Check(
            "cpus",
            "warn",
            detail + "; pinning on a single CPU shares it with everything else",
            "give the pipeline more CPUs (taskset / cpuset)",
        )
    return Check("cpus", "pass", detail)


def check_shm(opts: DoctorOptions) -> Check:
    d = Path(opts.shm_dir)
    if not d.is_dir():
        return Check(
            "shm",
            "fail",
            f"{d} does not exist or is not a directory",
            "mount a tmpfs at /dev/shm (`mount -t tmpfs tmpfs /dev/shm`)",
        )
    fstype = _fs_type(str(d))
    try:
        fd = os.open(str(d), os.O_TMPFILE | os.O_RDWR, 0o600)
        os.close(fd)
        writable = True
    except OSError:
        probe = d / f".byteor-doctor-{os.getpid()}"
        try:
            probe.write_bytes(b"x")
            probe.unlink()
            writable = True
        except OSError:
            writable = False
    st = os.statvfs(str(d))
    size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    detail = f"{d} ({fstype or 'unknown fs'}) size {_mib(size)}, free {_mib(free)}"
    if not writable:
        return Check(
            "shm", "fail", detail + "; not writable by this user", f"fix the permissions of {d} (mode 1777)"
        )
    if opts.spec is not None:
        need = spec_shm_bytes(opts.spec)
        detail += f"; the spec needs {_mib(need)} ({need} bytes)"
        if need > free:
            return Check(
                "shm",
                "fail",
                detail + " which is more than is free",
                "enlarge /dev/shm (`mount -o remount,size=... /dev/shm`), or lower "
                "capacity/slot_bytes/shards in the spec",
            )
        if need > free // 2:
            return Check(
                "shm",
                "warn",
                detail + ", over half of what is free",
                "enlarge /dev/shm before running several pipelines",
            )
    if fstype and fstype != "tmpfs":
        return Check(
            "shm", "warn", detail + "; not tmpfs, rings would hit a disk", "mount a tmpfs at /dev/shm"
        )
    return Check("shm", "pass", detail)


def _fs_type(path: str) -> str | None:
    best, fstype = "", None
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            mnt = parts[1]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype


def check_stale(opts: DoctorOptions) -> Check:
    d = Path(opts.byteor_shm_dir)
    if not d.exists():
        return Check("stale_shm", "pass", f"{d} does not exist: no byteor files")
    files = sorted(p for p in d.rglob("*") if p.is_file())
    from ..shm import stale_files

    stale = [os.fspath(p) for p in stale_files(str(d))]
    if not stale:
        return Check("stale_shm", "pass", f"{d}: {len(files)} byteor file(s), none stale")
    shown = ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else "")
    return Check(
        "stale_shm",
        "warn",
        f"{d}: {len(stale)} stale file(s) (every participant pid dead): {shown}",
        "capture evidence first (`byteor incident-bundle --ring-path=...`), then remove them",
    )


def check_headroom(opts: DoctorOptions) -> Check:
    cores = len(os.sched_getaffinity(0))
    load1, _, _ = os.getloadavg()
    wait = opts.wait or profile_request(opts.tuning).wait
    procs = _participants(opts.spec)
    detail = f"load {load1:.2f} on {cores} usable CPUs; wait strategy {wait}"
    if procs:
        detail += f"; the spec runs {procs} processes"
    if wait == "spin" and procs and procs > cores:
        return Check(
            "cpu_headroom",
            "warn",
            detail + f": {procs} spinning processes on {cores} CPUs will starve each other",
            "use --wait=backoff or block, fewer stages, or more CPUs",
        )
    if wait == "spin" and load1 + (procs or 1) > cores:
        return Check(
            "cpu_headroom",
            "warn",
            detail + f": spinning adds {procs or 1} busy CPU(s) to a load of {load1:.2f}",
            "use --wait=backoff, or run where there is idle CPU",
        )
    if load1 > cores:
        return Check(
            "cpu_headroom",
            "warn",
            detail + ": the host is already overloaded",
            "move other work off this host or use --wait=block",
        )
    return Check("cpu_headroom", "pass", detail)


def check_journal(opts: DoctorOptions) -> Check:
    d = Path(opts.journal_dir or DEFAULT_JOURNAL_DIR)
    existing = d
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    st = os.statvfs(str(existing))
    free = st.f_bavail * st.f_frsize
    fstype = _fs_type(str(existing))
    fsync = opts.journal_fsync or "none"
    detail = f"{d} on {fstype or 'unknown fs'}, free {_mib(free)}, fsync posture {fsync}"
    if not os.access(str(existing), os.W_OK):
        return Check(
            "journal", "fail", detail + "; not writable", f"create {d} writable by the pipeline user"
        )
    need = _journal_bytes(opts.spec)
    if need:
        detail += f"; journal lanes need about {_mib(need)} (two segments each)"
        if need > free:
            return Check(
                "journal",
                "fail",
                detail + " which is more than is free",
                "free disk space or lower segment_bytes",
            )
    if fstype == "tmpfs":
        return Check(
            "journal",
            "warn",
            detail + "; tmpfs does not survive a reboot whatever the fsync posture",
            "put journals on a disk filesystem (runtime.journal_dir=)",
        )
    if fsync == "none" and need:
        return Check(
            "journal",
            "warn",
            detail + "; fsync=none survives a process crash, not a power loss",
            "set runtime.journal_fsync=segment or always if records must survive power loss",
        )
    return Check("journal", "pass", detail)


def _side_effect_families(spec: PipelineSpecV1) -> list[str]:
    families: list[str | None]
    if isinstance(spec, SingleRingSpecV1):
        families = [s.family for s in spec.stages]
    else:
        families = [r.family for r in spec.roles if r.kind == "stage"]
    return sorted({f for f in families if f in ("http_post", "exec")})


def _key_set_check(key_path: str, families: list[str], needs_approval: bool) -> tuple[Check, KeySet | None]:
    if not os.path.exists(key_path):
        status = "fail" if needs_approval else ("warn" if families else "pass")
        detail = f"{key_path} not found"
        if not families:
            detail += "; the spec has no side-effect stages, none needed"
        fix = (
            ""
            if not families
            else (
                "place signing_keys.json next to the spec or pass --approval-key-set "
                "(or set BYTEOR_API_BASE_URL, BYTEOR_AGENT_ID, BYTEOR_AGENT_API_KEY)"
            )
        )
        return Check("signing_keys", status, detail, fix), None
    try:
        keys = load_key_set(key_path)
    except UsageError as exc:
        return Check(
            "signing_keys", "fail", f"unreadable key set: {exc}", "rewrite the key set (docs/policy.md)"
        ), None
    kids = ", ".join(sorted(keys.keys)) or "none"
    detail = f"{key_path}: {len(keys.keys)} key(s) ({kids}), source {keys.source}"
    refresh = all(
        os.environ.get(v) for v in ("BYTEOR_API_BASE_URL", "BYTEOR_AGENT_ID", "BYTEOR_AGENT_API_KEY")
    )
    detail += (
        "; refresh from the control plane configured" if refresh else "; no control-plane refresh configured"
    )
    if not keys.keys:
        return Check("signing_keys", "fail", detail + "; no keys", "add the trusted public keys"), keys
    if keys.source == "cached":
        if keys.last_refresh_at is None:
            return Check(
                "signing_keys",
                "warn",
                detail + "; cached without a refresh time",
                "refresh the keys from the control plane",
            ), keys
        age = (datetime.now(UTC) - parse_rfc3339(keys.last_refresh_at)).total_seconds()
        detail += f", last refreshed {keys.last_refresh_at} ({age / 3600:.1f} h ago)"
        if age > KEYSET_STALE_SECONDS:
            return Check(
                "signing_keys",
                "warn",
                detail + f"; older than {KEYSET_STALE_SECONDS // 3600} h",
                "refresh the keys from the control plane",
            ), keys
    return Check("signing_keys", "pass", detail), keys


def check_keys(opts: DoctorOptions) -> list[Check]:
    """Key set freshness and the approval (verified as ``run`` would) when a spec is given."""
    if opts.spec is None or opts.spec_path is None:
        return []
    spec_dir = os.path.dirname(os.path.abspath(opts.spec_path))
    families = _side_effect_families(opts.spec)
    needs_approval = bool(families) and opts.posture in ("staging", "prod")
    key_check, keys = _key_set_check(
        opts.key_set or os.path.join(spec_dir, "signing_keys.json"), families, needs_approval
    )
    out = [key_check]
    try:
        found = read_credential(opts.approval, spec_dir)
    except (UsageError, ApprovalError) as exc:
        out.append(Check("approval", "fail", f"cannot read the approval: {exc}", "issue a new approval"))
        return out
    if found is None:
        if families:
            where = os.path.join(spec_dir, "approval.cred")
            out.append(
                Check(
                    "approval",
                    "fail" if needs_approval else "pass",
                    f"no approval ({where} not found, no --approval); side-effect families "
                    f"{', '.join(families)}; posture {opts.posture}",
                    "issue one: `byteor approval issue --spec=... --env=...`" if needs_approval else "",
                )
            )
        return out
    credential, origin = found
    try:
        payload = decode_credential(credential)
    except ApprovalError as exc:
        out.append(Check("approval", "fail", f"{origin}: {exc}", "issue a new approval"))
        return out
    left = (parse_rfc3339(payload.expires_at) - datetime.now(UTC)).total_seconds()
    detail = (
        f"{origin}: approval {payload.approval_id} by {payload.issued_by}, posture "
        f"{payload.environment_posture}, capabilities {','.join(payload.capabilities) or 'none'}, "
        f"expires {payload.expires_at} ({left / 3600:+.1f} h)"
    )
    try:
        verify_credential(
            credential,
            keys=keys,
            spec_hash=spec_hash(opts.spec),
            posture=opts.posture,
            required=required_capabilities(opts.spec),
            max_lifetime=policy_table().rules(opts.posture).approval_max_lifetime,
        )
    except ApprovalError as exc:
        status = "fail" if needs_approval or exc.check == "expiry" else "warn"
        out.append(
            Check("approval", status, f"{detail}; {exc}", "issue a new approval for this spec and posture")
        )
        return out
    if left < APPROVAL_SOON_SECONDS:
        out.append(Check("approval", "warn", detail + "; verified, but expires within the hour", "renew it"))
    else:
        out.append(Check("approval", "pass", detail + "; verified"))
    return out


_TUNING_PROBE = """
import json, sys
from byteor.ops.tuning import apply_profile
rep = apply_profile(sys.argv[1], role="doctor-probe", spinning_peers=int(sys.argv[2]) or None)
print(json.dumps(rep.to_json()["knobs"]))
"""


def probe_tuning(profile: str, *, spinning_peers: int = 0) -> tuple[KnobState, ...]:
    """Apply ``profile`` for real in a short-lived child process and return what the host gave
    (Applied / Degraded / Failed per knob, with reasons). The caller's process is not changed."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _TUNING_PROBE, profile, str(spinning_peers)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return (
            KnobState("probe", profile, "-", "Failed", f"tuning probe timed out after {PROBE_TIMEOUT:.0f} s"),
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return (KnobState("probe", profile, "-", "Failed", f"tuning probe failed: {last}"),)
    return tuple(
        KnobState(k["knob"], k["requested"], k["applied"], k["state"], k["reason"])
        for k in json.loads(proc.stdout)
    )


def run_doctor(opts: DoctorOptions) -> DoctorReport:
    """Run every check (the key checks only when a spec is given) and return the report."""
    profile_request(opts.tuning)  # a malformed profile name is a UsageError, before any probe
    checks: list[Check] = [
        check_memlock(opts),
        check_rt_sched(opts),
        check_cpus(opts),
        check_shm(opts),
        check_stale(opts),
        check_headroom(opts),
        check_journal(opts),
        *check_keys(opts),
    ]
    knobs = probe_tuning(opts.tuning, spinning_peers=_participants(opts.spec))
    return DoctorReport(tuple(checks), opts.tuning, knobs)
