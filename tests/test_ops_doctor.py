"""``doctor`` on this machine, with the environment varied (tiny /dev/shm, memlock 0, profiles)."""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from byteor.ops import Check, DoctorOptions, run_doctor, spec_shm_bytes
from byteor.policy.approvals import issue_credential
from byteor.spec.kv import decode_kv, spec_hash

BYTEOR = Path(sys.executable).parent / "byteor"
SMALL = "pipeline.name=small\npipeline.target=SingleRing\npipeline.stages.0.id=a\n"
# 2^20 slots of 1 MiB: 1 TiB of ring, far more than any /dev/shm here.
HUGE = SMALL.replace("small", "huge") + "pipeline.ring.capacity=1048576\npipeline.ring.slot_bytes=1048576\n"


def _doctor(*args: str, preexec: Callable[[], None] | None = None) -> tuple[int, dict[str, object], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    proc = subprocess.run(
        [str(BYTEOR), "doctor", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        preexec_fn=preexec,
    )
    out: dict[str, object] = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, out, proc.stderr


def _checks(report: dict[str, object]) -> dict[str, dict[str, str]]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return {c["check"]: c for c in checks}


def test_doctor_on_this_machine(tmp_path: Path) -> None:
    spec = tmp_path / "small.kv"
    spec.write_text(SMALL)
    code, report, err = _doctor(f"--spec={spec}")
    checks = _checks(report)
    assert {"memlock", "rt_sched", "cpus", "shm", "stale_shm", "cpu_headroom", "journal"} <= set(checks)
    assert code == (0 if report["ok"] else 1), err
    assert all(c["status"] in ("pass", "warn", "fail") for c in checks.values())
    assert checks["shm"]["status"] == "pass" and "the spec needs" in checks["shm"]["detail"]
    assert f"{os.cpu_count()} CPUs online" in checks["cpus"]["detail"]
    knobs = report["tuning_knobs"]
    assert isinstance(knobs, list) and [k["knob"] for k in knobs] == [
        "cpu_pinning",
        "mlockall",
        "sched_fifo",
        "wait",
    ]
    assert {k["state"] for k in knobs} == {"Applied"}  # the default profile asks for nothing privileged
    _, iso, _ = _doctor("--tuning=isolated-core")
    iso_knobs = iso["tuning_knobs"]
    assert isinstance(iso_knobs, list)
    assert {k["state"] for k in iso_knobs} <= {"Applied", "Degraded", "Failed"}
    assert all(k["reason"] for k in iso_knobs if k["state"] != "Applied")


def test_spec_larger_than_shm_free_space_fails(tmp_path: Path) -> None:
    spec = tmp_path / "huge.kv"
    spec.write_text(HUGE)
    code, report, _ = _doctor(f"--spec={spec}")
    shm = _checks(report)["shm"]
    assert code == 1 and report["ok"] is False
    assert shm["status"] == "fail" and "more than is free" in shm["detail"]
    assert str(spec_shm_bytes(decode_kv(HUGE))) in shm["detail"]
    assert "/dev/shm" in shm["fix"]


def test_memlock_zero_in_a_subprocess_is_reported() -> None:
    def zero_memlock() -> None:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))

    _, report, _ = _doctor("--tuning=low-latency", preexec=zero_memlock)
    memlock = _checks(report)["memlock"]
    assert "RLIMIT_MEMLOCK soft 0 bytes, hard 0 bytes" in memlock["detail"]
    assert memlock["status"] in ("warn", "fail") and "the limit is 0" in memlock["detail"]
    assert "ulimit -l" in memlock["fix"]


def test_isolated_core_profile_needs_isolated_cpus() -> None:
    code, report, _ = _doctor("--tuning=isolated-core")
    cpus = _checks(report)["cpus"]
    if Path("/sys/devices/system/cpu/isolated").read_text().strip():
        pytest.skip("this host has isolated CPUs")
    assert cpus["status"] == "fail" and "needs isolated CPUs" in cpus["detail"] and code == 1


def test_spinning_stages_on_too_few_cores_warn_with_numbers(tmp_path: Path) -> None:
    spec = tmp_path / "four.kv"
    spec.write_text(SMALL + "".join(f"pipeline.stages.{i}.id=s{i}\n" for i in (1, 2, 3)))
    _, report, _ = _doctor(f"--spec={spec}", "--wait=spin")
    head = _checks(report)["cpu_headroom"]
    cores = len(os.sched_getaffinity(0))
    assert head["status"] == "warn"
    assert "wait strategy spin" in head["detail"] and f"on {cores}" in head["detail"]


def test_human_table_and_usage_errors(tmp_path: Path) -> None:
    proc = subprocess.run([str(BYTEOR), "doctor"], capture_output=True, text=True, timeout=120, check=False)
    assert "memlock" in proc.stdout and "pass" in proc.stdout and "check" in proc.stdout
    bad = subprocess.run(
        [str(BYTEOR), "doctor", "--tuning=turbo"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2 and "turbo" in bad.stderr
    missing = subprocess.run(
        [str(BYTEOR), "doctor", f"--spec={tmp_path / 'no.kv'}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (
        missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    )


def test_stale_ring_files_and_journal_on_tmpfs(tmp_path: Path) -> None:
    shm_dir = tmp_path / "byteor"
    (shm_dir / "notaring").mkdir(parents=True)
    (shm_dir / "notaring" / "junk").write_bytes(b"\0" * 128)
    report = run_doctor(
        DoctorOptions(byteor_shm_dir=str(shm_dir), journal_dir="/dev/shm/byteor-doctor-test-j")
    )
    checks = {c.name: c for c in report.checks}
    assert checks["stale_shm"].status == "pass" and "none stale" in checks["stale_shm"].detail
    assert checks["journal"].status == "warn" and "tmpfs" in checks["journal"].detail
    # A real ring whose creator exited without cleaning up is stale.
    ring = shm_dir / "gone-12345678" / "shard-0.ring"
    code = (
        "import sys; from byteor.shm import create_ring; "
        f"r = create_ring({str(ring)!r}, 8, 64, [0], 'sha256:' + '0' * 64); r.close()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    stale = {c.name: c for c in run_doctor(DoctorOptions(byteor_shm_dir=str(shm_dir))).checks}["stale_shm"]
    assert stale.status == "warn" and str(ring) in stale.detail and "incident-bundle" in stale.fix


def _keyset(tmp_path: Path, **envelope: object) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    entry = {"kid": "k1", "alg": "ed25519", "public_key": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
    (tmp_path / "signing_keys.json").write_text(json.dumps({**envelope, "keys": [entry]}))
    return key


def _run(spec_path: Path, posture: str = "staging") -> dict[str, Check]:
    spec = decode_kv(spec_path.read_bytes())
    report = run_doctor(DoctorOptions(spec=spec, spec_path=str(spec_path), posture=posture))
    return {c.name: c for c in report.checks}


def test_key_set_and_approval_checks(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.kv"
    spec_path.write_text(
        "pipeline.name=act\npipeline.target=SingleRing\npipeline.stages.0.id=post\npipeline.stages.0.op=resolver\n"
        "pipeline.stages.0.resolver_key=http_post:http://127.0.0.1:9/x\n"
    )
    shash = spec_hash(decode_kv(spec_path.read_bytes()))
    checks = _run(spec_path)
    assert checks["signing_keys"].status == "fail" and checks["approval"].status == "fail"
    assert _run(spec_path, "dev")["approval"].status == "pass"  # dev needs no approval

    key = _keyset(tmp_path, source="cached", last_refresh_at="2020-01-01T00:00:00Z")
    old = datetime.now(UTC) - timedelta(days=2)
    expired = issue_credential(
        key,
        kid="k1",
        spec_hash=shash,
        posture="staging",
        capabilities=["http_post"],
        ttl=timedelta(hours=1),
        issued_at=old,
    )
    (tmp_path / "approval.cred").write_text(expired + "\n")
    checks = _run(spec_path)
    assert checks["signing_keys"].status == "warn" and "older than 24 h" in checks["signing_keys"].detail
    assert checks["approval"].status == "fail" and "expiry check failed" in checks["approval"].detail

    fresh = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    key = _keyset(tmp_path, source="refreshed", last_refresh_at=fresh)
    good = issue_credential(
        key, kid="k1", spec_hash=shash, posture="staging", capabilities=["http_post"], ttl=timedelta(hours=8)
    )
    (tmp_path / "approval.cred").write_text(good)
    checks = _run(spec_path)
    assert checks["signing_keys"].status == "pass"
    assert checks["approval"].status == "pass" and "verified" in checks["approval"].detail
    soon = issue_credential(
        key,
        kid="k1",
        spec_hash=shash,
        posture="staging",
        capabilities=["http_post"],
        ttl=timedelta(minutes=10),
    )
    (tmp_path / "approval.cred").write_text(soon)
    assert _run(spec_path)["approval"].status == "warn"
    other = issue_credential(
        key,
        kid="k1",
        spec_hash="sha256:" + "0" * 64,
        posture="staging",
        capabilities=["http_post"],
        ttl=timedelta(hours=8),
    )
    (tmp_path / "approval.cred").write_text(other)
    checks = _run(spec_path)
    assert checks["approval"].status == "fail" and "spec_hash check failed" in checks["approval"].detail
    (tmp_path / "approval.cred").write_text("garbage")
    checks = _run(spec_path)
    assert checks["approval"].status == "fail" and "decode" in checks["approval"].detail
    (tmp_path / "signing_keys.json").write_text("{")
    assert _run(spec_path)["signing_keys"].status == "fail"
