"""Tuning profiles applied in real child processes (never in the test process itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from byteor import UsageError
from byteor.ops import plan_profile
from byteor.ops.runtime_config import KNOBS, RuntimeConfig, read_runtime_config
from byteor.ops.tuning import profile_request

Cli = Callable[..., subprocess.CompletedProcess[str]]

CHILD = """
import json, os, resource, sys
from byteor.ops.tuning import apply_profile
from byteor.ops.runtime_config import RuntimeConfig
if sys.argv[3] != "-":
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (int(sys.argv[3]), int(sys.argv[3])))
cfg = RuntimeConfig(**json.loads(sys.argv[4])) if sys.argv[4] != "-" else None
rep = apply_profile(sys.argv[1], role=sys.argv[2], config=cfg, spinning_peers=int(sys.argv[5]))
out = rep.to_json()
out["affinity"] = sorted(os.sched_getaffinity(0))
out["policy"] = os.sched_getscheduler(0)
out["config"] = rep.into_config().effective[sys.argv[2]][0].knob
print(json.dumps(out))
"""


def _apply(
    profile: str,
    role: str = "s0",
    *,
    memlock: int | None = None,
    config: dict[str, object] | None = None,
    peers: int = 1,
) -> dict[str, object]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            profile,
            role,
            "-" if memlock is None else str(memlock),
            "-" if config is None else json.dumps(config),
            str(peers),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def _knobs(report: dict[str, object]) -> dict[str, dict[str, str]]:
    knobs = report["knobs"]
    assert isinstance(knobs, list)
    return {k["knob"]: k for k in knobs}


def test_default_profile_changes_nothing() -> None:
    rep = _apply("default")
    knobs = _knobs(rep)
    assert list(knobs) == list(KNOBS)
    assert all(k["state"] == "Applied" for k in knobs.values())
    assert knobs["wait"]["applied"] == "backoff"
    assert rep["affinity"] == sorted(os.sched_getaffinity(0))
    assert rep["policy"] == os.SCHED_OTHER


def test_low_latency_pins_one_cpu_and_reports_every_knob() -> None:
    rep = _apply("low-latency", "stage-b")
    knobs = _knobs(rep)
    assert knobs["cpu_pinning"]["state"] == "Applied"
    affinity = rep["affinity"]
    assert isinstance(affinity, list) and len(affinity) == 1
    assert knobs["cpu_pinning"]["applied"] == f"cpu {affinity[0]}"
    assert knobs["mlockall"]["state"] in ("Applied", "Degraded", "Failed")
    assert knobs["mlockall"]["state"] == "Applied" or knobs["mlockall"]["reason"]
    # The same role lands on the same CPU every time (stable choice, restarts included).
    assert _apply("low-latency", "stage-b")["affinity"] == rep["affinity"]


def test_isolated_core_degrades_without_isolated_cpus_and_reports_fifo() -> None:
    rep = _apply("isolated-core")
    knobs = _knobs(rep)
    iso = Path("/sys/devices/system/cpu/isolated").read_text().strip()
    if not iso:
        assert knobs["cpu_pinning"]["state"] == "Degraded"
        assert "no isolated CPUs" in knobs["cpu_pinning"]["reason"]
    fifo = knobs["sched_fifo"]
    assert fifo["requested"] == "50"
    if fifo["state"] == "Applied":
        assert rep["policy"] == os.SCHED_FIFO
    else:
        assert fifo["state"] == "Failed" and "sched_setscheduler" in fifo["reason"]


def test_spin_on_too_few_cpus_degrades_to_backoff_with_numbers() -> None:
    cpus = len(os.sched_getaffinity(0))
    knobs = _knobs(_apply("low-latency", peers=cpus + 3))
    assert knobs["wait"]["state"] == "Degraded" and knobs["wait"]["applied"] == "backoff"
    assert f"{cpus + 3} spinning processes on {cpus} usable CPUs" in knobs["wait"]["reason"]


def test_config_overrides_profile() -> None:
    knobs = _knobs(
        _apply("isolated-core", config={"wait": "block", "sched_fifo_priority": 0, "mlockall": False})
    )
    assert knobs["wait"]["applied"] == "block"
    assert knobs["sched_fifo"]["requested"] == "off" and knobs["mlockall"]["requested"] == "off"


def test_cpu_outside_the_affinity_set_fails_with_reason() -> None:
    cfg = {"cpus": [4095]}
    knobs = _knobs(_apply("low-latency", config=cfg))
    assert (
        knobs["cpu_pinning"]["state"] == "Failed"
        and "outside this process's affinity" in knobs["cpu_pinning"]["reason"]
    )


def test_plan_and_malformed_requests() -> None:
    plan = plan_profile("low-latency", role="x")
    assert {k.state for k in plan.knobs} == {"Requested"}
    with pytest.raises(UsageError, match="unknown tuning profile 'turbo'"):
        profile_request("turbo")
    assert profile_request("default", RuntimeConfig(wait="spin")).wait == "spin"


def test_memlock_limit_zero_is_reported() -> None:
    knobs = _knobs(_apply("low-latency", memlock=0))
    mlock = knobs["mlockall"]
    if mlock["state"] == "Applied":
        assert mlock["reason"] == "via CAP_IPC_LOCK"  # a limit of 0 only works with the capability
    else:
        assert mlock["state"] in ("Degraded", "Failed") and "RLIMIT_MEMLOCK" in mlock["reason"]


RECORD = """
import sys
from byteor.ops.tuning import tune_process
lines = []
rep = tune_process(sys.argv[1], role=sys.argv[2], record_to=sys.argv[3], log=lines.append)
assert len(lines) == 4 and all(line.startswith("tuning profile=") for line in lines)
"""


def test_several_processes_record_their_tuning_in_one_runtime_config(tmp_path: Path, cli: Cli) -> None:
    ring_dir = tmp_path / "ring"
    ring_dir.mkdir()
    target = ring_dir / "runtime_config.txt"
    procs = [
        subprocess.Popen([sys.executable, "-c", RECORD, "default", f"stage-{i}", str(target)])
        for i in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    cfg = read_runtime_config(target)
    assert sorted(cfg.effective) == [f"stage-{i}" for i in range(4)]
    assert all(len(knobs) == len(KNOBS) for knobs in cfg.effective.values())
    # incident-bundle picks the effective config up from next to the ring files.
    spec = tmp_path / "spec.kv"
    spec.write_text("pipeline.name=t\npipeline.target=SingleRing\npipeline.stages.0.id=a\n")
    out = tmp_path / "bundle"
    res = cli("incident-bundle", f"--spec={spec}", f"--out={out}", f"--ring-path={ring_dir}")
    assert res.returncode == 0, res.stderr
    assert (out / "runtime_config.txt").read_text() == target.read_text()


# --------------------------------------------------------------------------------------------------
# Balanced pinning across the processes of a run
# --------------------------------------------------------------------------------------------------

PLACED = """
import json, os, sys
from byteor.ops.tuning import apply_profile
from byteor.ops.runtime_config import RuntimeConfig
cfg = RuntimeConfig(**json.loads(sys.argv[3]))
rep = apply_profile(sys.argv[1], role=sys.argv[2], config=cfg, spinning_peers=1, roles=sys.argv[4].split(","))
out = rep.to_json()
out["affinity"] = sorted(os.sched_getaffinity(0))
print(json.dumps(out))
"""


def _placed(profile: str, role: str, roles: list[str], cpus: list[int]) -> dict[str, dict[str, str]]:
    proc = subprocess.run([sys.executable, "-c", PLACED, profile, role, json.dumps({"cpus": cpus}), ",".join(roles)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return _knobs(json.loads(proc.stdout))


def test_placements_are_distinct_while_there_are_cpus_then_shared() -> None:
    from byteor.ops.tuning import plan_placements

    plan = plan_placements(["read", "bump", "emit"], [3, 1])
    assert {r: p.cpu for r, p in plan.items()} == {"read": 1, "bump": 3, "emit": 1}
    assert plan["read"].shares_with == ("emit",) and plan["emit"].shares_with == ("read",)
    assert plan["bump"].shares_with == ()
    wide = plan_placements(["a", "b"], [0, 1, 2, 3])
    assert {r: p.cpu for r, p in wide.items()} == {"a": 0, "b": 1}
    assert all(not p.shares_with for p in wide.values())
    assert plan_placements(["a"], []) == {}


def test_a_process_that_fits_gets_its_own_cpu_and_may_spin() -> None:
    cpu = min(os.sched_getaffinity(0))
    knobs = _placed("low-latency", "read", ["read"], [cpu])
    assert knobs["cpu_pinning"]["state"] == "Applied" and knobs["cpu_pinning"]["applied"] == f"cpu {cpu}"
    assert knobs["wait"]["state"] == "Applied" and knobs["wait"]["applied"] == "spin"


def test_processes_sharing_a_cpu_are_degraded_and_never_spin_there() -> None:
    cpu = min(os.sched_getaffinity(0))
    roles = ["read", "bump", "emit"]
    for role in roles:
        knobs = _placed("isolated-core", role, roles, [cpu])
        pin = knobs["cpu_pinning"]
        assert pin["state"] == "Degraded" and pin["applied"] == f"cpu {cpu}"
        assert f"3 processes on 1 cpu(s): shares cpu {cpu} with" in pin["reason"]
        assert all(repr(other) in pin["reason"] for other in roles if other != role)
        wait = knobs["wait"]
        assert wait["state"] == "Degraded" and wait["applied"] == "backoff", wait
        assert "would starve them" in wait["reason"]


def test_chain_example_spreads_its_stages_over_the_cpus(cli: Cli, examples: Path) -> None:
    proc = cli("run", examples / "chain.kv", "--tuning=low-latency", "--input-ascii=abc", "--json",
               "--wait=backoff", timeout=180)
    assert proc.returncode == 0, proc.stderr
    roles = json.loads(proc.stdout)["tuning"]["roles"]
    pins = {role: {k["knob"]: k for k in knobs}["cpu_pinning"] for role, knobs in roles.items()}
    assert sorted(pins) == ["bump", "emit", "read"]
    allowed = sorted(os.sched_getaffinity(0))
    used = [pins[r]["applied"] for r in ("read", "bump", "emit")]
    assert used == [f"cpu {allowed[i % len(allowed)]}" for i in range(3)]
    for i, role in enumerate(("read", "bump", "emit")):
        shares = len(allowed) < 3 and (i < 3 - len(allowed) or i >= len(allowed))
        assert pins[role]["state"] == ("Degraded" if shares else "Applied"), pins[role]
