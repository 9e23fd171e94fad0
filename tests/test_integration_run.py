"""`run` wired to the finished parts, through the real `byteor` script: tuning profiles and
runtime_config.txt, `--config`, the policy audit record, `--policy-file`, bounded side-effect
records, and the LaneGraph journal options."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from byteor.ops import read_runtime_config
from byteor.ops.runtime_config import KNOBS, STATES
from byteor.policy.audit import read_policy_audit
from byteor.spec.kv import load_spec_file, spec_hash
from conftest import BIN, EXAMPLES, CliRunner
from policy_support import HttpTarget, write_lanegraph_spec, write_spec

CHAIN = """\
pipeline.name=intchain
pipeline.target=SingleRing
pipeline.ring.capacity=64
pipeline.ring.slot_bytes=64
pipeline.stages.0.id=a
pipeline.stages.1.id=b
pipeline.stages.1.op=add_u8
pipeline.stages.1.delta=1
pipeline.stages.1.depends_on.0=0
"""


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    path = tmp_path / "chain.kv"
    path.write_text(CHAIN)
    return path


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}


def _wait_for(pred: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _knob_table(roles: dict[str, list[dict[str, str]]], role: str) -> dict[str, dict[str, str]]:
    knobs = {k["knob"]: k for k in roles[role]}
    assert set(knobs) == set(KNOBS), knobs
    assert all(k["state"] in STATES for k in knobs.values())
    return knobs


# ==================================================================================================
# tuning, runtime_config.txt, snapshot
# ==================================================================================================


@pytest.mark.parametrize("profile", ["default", "low-latency", "isolated-core"])
def test_mp_stages_apply_the_profile_and_log_every_knob(cli: CliRunner, chain: Path, ring_dir: Path,
                                                        profile: str) -> None:
    r = cli("run", chain, f"--ring-path={ring_dir}", f"--tuning={profile}", "--json", input="x\ny\n")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["outputs"] == ["79", "7a"]
    assert summary["tuning"]["profile"] == profile
    roles = summary["tuning"]["roles"]
    assert set(roles) == {"a", "b"}
    for role in ("a", "b"):
        knobs = _knob_table(roles, role)
        assert f"tuning profile={profile} role={role} " in r.stderr
        # the wait the stages used is the one the run reports
        assert knobs["wait"]["applied"] == summary["wait"]
    if profile == "default":
        assert summary["wait"] == "backoff"
        assert {k["state"] for k in roles["a"]} == {"Applied"}
    else:
        assert _knob_table(roles, "a")["mlockall"]["requested"] != "off"
        # 3 processes may spin here only with more than 3 usable CPUs; otherwise spin is Degraded
        wait = _knob_table(roles, "a")["wait"]
        assert wait["requested"] == "spin"
        if len(os.sched_getaffinity(0)) < 3:
            assert (wait["applied"], wait["state"]) == ("backoff", "Degraded") and wait["reason"]


def test_explicit_wait_overrides_the_profile(cli: CliRunner, chain: Path, ring_dir: Path) -> None:
    r = cli("run", chain, f"--ring-path={ring_dir}", "--tuning=low-latency", "--wait=block", "--json",
            input="a\n")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["wait"] == "block"
    assert _knob_table(summary["tuning"]["roles"], "b")["wait"]["applied"] == "block"


def test_no_profile_is_quiet_and_still_recorded(cli: CliRunner, chain: Path, ring_dir: Path) -> None:
    r = cli("run", chain, f"--ring-path={ring_dir}", "--input-hex=00")
    assert (r.returncode, r.stdout, r.stderr) == (0, "01\n", "")
    r = cli("run", chain, f"--ring-path={ring_dir}", "--wait=yield", "--json", input="a\n")
    summary = json.loads(r.stdout)
    assert summary["tuning"]["profile"] is None
    assert _knob_table(summary["tuning"]["roles"], "a")["wait"]["applied"] == "yield"


def test_sp_process_is_tuned(cli: CliRunner, chain: Path) -> None:
    r = cli("run", chain, "--sp", "--tuning=low-latency", "--input-hex=00", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert list(summary["tuning"]["roles"]) == ["sp"]
    _knob_table(summary["tuning"]["roles"], "sp")
    assert "tuning profile=low-latency role=sp " in r.stderr


def test_snapshot_shows_the_tuning_of_a_live_run_and_clean_exit_removes_it(chain: Path, ring_dir: Path,
                                                                         cli: CliRunner) -> None:
    proc = subprocess.Popen([str(BIN / "byteor"), "run", str(chain), f"--ring-path={ring_dir}",
                             "--tuning=low-latency", "--wait=block"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        record = ring_dir / "runtime_config.txt"

        def both_recorded() -> bool:
            try:
                return set(read_runtime_config(record).effective) == {"a", "b"}
            except Exception:
                return False

        _wait_for(both_recorded)
        assert read_runtime_config(record).tuning == "low-latency"
        r = cli("snapshot", f"--ring-path={ring_dir}", "--json")
        assert r.returncode == 0, r.stderr
        snap = json.loads(r.stdout)
        assert set(snap["tuning"]) == {"a", "b"} and len(snap["rings"]) == 1
        _knob_table(snap["tuning"], "a")
        r = cli("snapshot", f"--ring-path={ring_dir / 'shard-0.ring'}")
        assert r.returncode == 0, r.stderr
        assert "tuning (runtime_config.txt)" in r.stdout and "cpu_pinning" in r.stdout
        out, err = proc.communicate(b"hi\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert out == b"696a\n"
    assert not ring_dir.exists()  # runtime_config.txt and its .lock went with the rings


def test_snapshot_of_a_ring_without_record_has_null_tuning(cli: CliRunner, tmp_path: Path) -> None:
    from byteor.shm import create_ring

    ring = create_ring(str(tmp_path / "shard-0.ring"), 8, 16, [0], b"\x00" * 32)
    try:
        r = cli("snapshot", f"--ring-path={tmp_path}", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["tuning"] is None
        (tmp_path / "runtime_config.txt").write_text("config.v=1\ntuning.x.wait.state=Maybe\n")
        r = cli("snapshot", f"--ring-path={tmp_path}")
        assert r.returncode == 2 and "line 2" in r.stderr and "tuning.x.wait.state" in r.stderr
    finally:
        ring.close()


# ==================================================================================================
# --config
# ==================================================================================================


def test_config_values_are_defaults_for_options_not_given(cli: CliRunner, chain: Path, ring_dir: Path,
                                                          tmp_path: Path) -> None:
    cfg = tmp_path / "runtime_config.txt"
    cfg.write_text(f"# operator settings\nconfig.v=1\nruntime.tuning=low-latency\nruntime.wait=yield\n"
                   f"runtime.ring_path={ring_dir}\n")
    r = cli("run", chain, f"--config={cfg}", "--json", input="a\n")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["ring_path"], summary["wait"], summary["tuning"]["profile"]) == (
        str(ring_dir), "yield", "low-latency")
    r = cli("run", chain, f"--config={cfg}", "--tuning=default", "--wait=block", "--json", input="a\n")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["wait"], summary["tuning"]["profile"]) == ("block", "default")
    assert cfg.read_text().startswith("# operator settings")  # the run never writes the operator's file


@pytest.mark.parametrize(("text", "needle"), [
    ("config.v=1\nruntime.wait=fast\n", "line 2"),
    ("runtime.tuning=turbo\n", "runtime.tuning"),
    ("runtime.cpus=1\nruntime.speed=9\n", "unknown key `runtime.speed`"),
    ("config.v=9\n", "config.v"),
])
def test_bad_config_file_is_usage_error(cli: CliRunner, chain: Path, tmp_path: Path, text: str,
                                        needle: str) -> None:
    cfg = tmp_path / "bad.txt"
    cfg.write_text(text)
    r = cli("run", chain, "--sp", f"--config={cfg}", "--input-hex=00")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and str(cfg) in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_missing_config_file_and_bad_option_values(cli: CliRunner, chain: Path, tmp_path: Path) -> None:
    r = cli("run", chain, "--sp", f"--config={tmp_path / 'nope.txt'}", "--input-hex=00")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = cli("run", chain, "--sp", "--tuning=turbo", "--input-hex=00")
    assert r.returncode == 2 and "--tuning" in r.stderr
    r = cli("run", chain, "--sp", "--fsync=sometimes", "--input-hex=00")
    assert r.returncode == 2 and "--fsync" in r.stderr


def test_config_env_is_the_posture_default(cli: CliRunner, http_target: HttpTarget, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, f"http_post:{http_target.base}/cfg")
    cfg = tmp_path / "prod.txt"
    cfg.write_text("runtime.env=prod\n")
    r = cli("run", spec, "--sp", f"--config={cfg}", "--input-hex=00")
    assert r.returncode == 4 and "posture prod" in r.stderr
    r = cli("run", spec, "--sp", f"--config={cfg}", "--env=dev", "--input-hex=00")
    assert r.returncode == 0, r.stderr
    assert len(http_target.recorder.posts()) == 1


# ==================================================================================================
# policy audit, --policy-file, bounded side-effect records
# ==================================================================================================


def _hash8(spec: Path) -> str:
    return spec_hash(load_spec_file(str(spec))).removeprefix("sha256:")[:8]


def test_every_side_effect_run_writes_the_policy_audit(cli: CliRunner, http_target: HttpTarget,
                                                       tmp_path: Path, ring_dir: Path) -> None:
    spec = write_spec(tmp_path, f"http_post:{http_target.base}/audit")
    default = tmp_path / f"policy_audit-{_hash8(spec)}.json"
    r = cli("run", spec, f"--ring-path={ring_dir}", "--wait=block", "--json", input="a\nb\n")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["policy_audit"] == str(default)
    rec = read_policy_audit(str(default))
    assert (rec["ok"], rec["enforced"], rec["mode"], rec["wait"], rec["lane_path"]) == (
        True, True, "dev", "block", str(ring_dir))
    assert [d["decision"] for d in rec["decisions"]] == ["Allow"]
    assert rec["spec"]["name"] == "actions"

    # refused runs are recorded too, at --policy-audit=FILE
    other = tmp_path / "audits" / "staging.json"
    r = cli("run", spec, "--sp", "--env=staging", f"--policy-audit={other}", "--input-hex=00")
    assert r.returncode == 4 and str(other) in r.stderr
    rec = read_policy_audit(str(other))
    assert (rec["mode"], rec["wait"], rec["lane_path"]) == ("staging", None, None)
    assert [d["decision"] for d in rec["decisions"]] == ["RequireApproval"]
    assert len(http_target.recorder.posts()) == 2


def test_no_audit_without_side_effect_stages(cli: CliRunner, chain: Path, tmp_path: Path) -> None:
    r = cli("run", chain, "--sp", "--input-hex=00", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["policy_audit"] is None
    assert not list(tmp_path.glob("policy_audit*"))


def test_unwritable_policy_audit_path_is_usage_error(cli: CliRunner, http_target: HttpTarget,
                                                     tmp_path: Path) -> None:
    spec = write_spec(tmp_path, f"http_post:{http_target.base}/x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = cli("run", spec, "--sp", f"--policy-audit={blocker / 'audit.json'}", "--input-hex=00")
    assert r.returncode == 2 and "--policy-audit" in r.stderr and "Traceback" not in r.stderr
    assert http_target.recorder.posts() == []  # nothing ran without its audit record


def test_policy_file_reaches_the_gate(cli: CliRunner, http_target: HttpTarget, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, f"http_post:{http_target.base}/pf")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy_version": 1, "postures": {"dev": {"families": {"http_post": "deny"}},
                                                                    "staging": {"side_effects": "allow"}}}))
    r = cli("run", spec, "--sp", f"--policy-file={policy}", "--input-hex=00")
    assert r.returncode == 4 and "Deny" in r.stderr
    r = cli("run", spec, "--sp", f"--policy-file={policy}", "--env=staging", "--input-hex=00", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["policy"]["policy_source"] != "default"
    assert len(http_target.recorder.posts()) == 1
    policy.write_text("{not json")
    r = cli("run", spec, "--sp", f"--policy-file={policy}", "--input-hex=00")
    assert r.returncode == 2 and str(policy) in r.stderr


@pytest.mark.parametrize("mode", ["sp", "mp"])
def test_performed_posts_are_counted_not_printed_and_dry_runs_kept(
        cli: CliRunner, http_target: HttpTarget, tmp_path: Path, ring_dir: Path, mode: str) -> None:
    spec = write_spec(tmp_path, f"http_post:{http_target.base}/many")
    args = ["--sp"] if mode == "sp" else [f"--ring-path={ring_dir}", "--wait=block"]
    n = 40
    body = "".join(f"m{i}\n" for i in range(n))
    r = cli("run", spec, *args, "--json", input=body)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert len(http_target.recorder.posts()) == n
    assert summary["side_effects"] == []
    assert summary["side_effect_counts"] == {"total": n, "by_decision": {"Allow": n}, "records_kept": 0,
                                             "records_omitted": 0}
    assert "byteor stage:" not in r.stderr and r.stderr.count("\n") < 3
    r = cli("run", spec, *args, "--dry-run", input=body)
    assert r.returncode == 0, r.stderr
    assert f"{n} side effect(s): {n} DryRunOnly" in r.stderr and "policy audit" in r.stderr
    r = cli("run", spec, *args, "--dry-run", "--json", input=body)
    summary = json.loads(r.stdout)
    assert [e["decision"] for e in summary["side_effects"]] == ["DryRunOnly"] * n
    assert summary["side_effect_counts"]["by_decision"] == {"DryRunOnly": n}
    assert len(http_target.recorder.posts()) == n  # dry runs posted nothing


# ==================================================================================================
# LaneGraph: journal options, tuning of role processes, side effects of roles
# ==================================================================================================


@pytest.mark.parametrize("mode", ["sp", "mp"])
def test_lanegraph_journal_dir_and_fsync_options(cli: CliRunner, ring_dir: Path, tmp_path: Path,
                                                 mode: str) -> None:
    journal = tmp_path / "journal"
    args = ["--sp"] if mode == "sp" else [f"--lane-path={ring_dir}"]
    r = cli("run", EXAMPLES / "lanegraph.kv", *args, f"--journal-dir={journal}", "--fsync=always", "--json",
            input="a\nb\nc\n")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["outputs"] == ["62", "63", "64"]
    assert summary["journal_dir"] == str(journal)
    segments = [p for p in journal.rglob("*") if p.is_file()]
    assert segments and all(str(p).startswith(str(journal / "audit")) for p in segments)
    # the config file's journal settings apply when the options are not given
    cfg = tmp_path / "rc.txt"
    other = tmp_path / "other-journal"
    cfg.write_text(f"runtime.journal_dir={other}\nruntime.journal_fsync=segment\n")
    r = cli("run", EXAMPLES / "lanegraph.kv", *args, f"--config={cfg}", "--json", input="z\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["journal_dir"] == str(other) and any(other.rglob("*"))


def test_lanegraph_roles_are_tuned_and_lane_dir_is_removed(cli: CliRunner, ring_dir: Path,
                                                           tmp_path: Path) -> None:
    r = cli("run", EXAMPLES / "lanegraph.kv", f"--lane-path={ring_dir}", f"--journal-dir={tmp_path / 'j'}",
            "--tuning=low-latency", "--json", input="a\n")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    roles = summary["tuning"]["roles"]
    assert set(roles) == {"bump", "to-journal"}
    for role in roles:
        _knob_table(roles, role)
        assert f"role={role} " in r.stderr
    # ring_dir fixture: runtime_config.txt, its .lock and the role files are gone


def test_lanegraph_snapshot_shows_tuning_while_running(ring_dir: Path, tmp_path: Path, cli: CliRunner) -> None:
    proc = subprocess.Popen([str(BIN / "byteor"), "run", str(EXAMPLES / "lanegraph.kv"), f"--lane-path={ring_dir}",
                             f"--journal-dir={tmp_path / 'j'}", "--tuning=default", "--wait=block"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        def recorded() -> bool:
            try:
                return set(read_runtime_config(ring_dir / "runtime_config.txt").effective) == {
                    "bump", "to-journal"} and (ring_dir / "lane_graph_state.json").exists()
            except Exception:
                return False

        _wait_for(recorded)
        r = cli("snapshot", f"--lane-path={ring_dir}", "--json")
        assert r.returncode == 0, r.stderr
        snap = json.loads(r.stdout)
        assert set(snap["tuning"]) == {"bump", "to-journal"} and snap["lanes"]
        r = cli("snapshot", f"--lane-path={ring_dir}")
        assert "tuning (runtime_config.txt)" in r.stdout
        out, err = proc.communicate(b"q\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert out == b"72\n"


def test_lanegraph_role_side_effects_are_counted(cli: CliRunner, http_target: HttpTarget, tmp_path: Path,
                                                 ring_dir: Path) -> None:
    spec = write_lanegraph_spec(tmp_path, f"http_post:{http_target.base}/lg")
    n = 25
    body = "".join(f"r{i}\n" for i in range(n))
    r = cli("run", spec, f"--lane-path={ring_dir}", "--json", input=body)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert len(http_target.recorder.posts()) == n
    assert summary["side_effect_counts"]["by_decision"] == {"Allow": n}
    assert "byteor stage:" not in r.stderr
    rec = read_policy_audit(summary["policy_audit"])
    assert rec["lane_path"] == str(ring_dir) and [d["decision"] for d in rec["decisions"]] == ["Allow"]
    r = cli("run", spec, f"--lane-path={ring_dir}", "--dry-run", "--json", input=body)
    summary = json.loads(r.stdout)
    assert [e["decision"] for e in summary["side_effects"]] == ["DryRunOnly"] * n
    assert len(http_target.recorder.posts()) == n


def test_lanegraph_role_prints_go_to_stderr(cli: CliRunner, ring_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "noisy_stage.py").write_text(
        "def shout(slot, n):\n    print('hello from a role')\n    return n\n")
    spec = tmp_path / "noisy.kv"
    spec.write_text("\n".join([
        "pipeline.name=noisy", "pipeline.target=LaneGraph",
        "pipeline.lanes.0.name=a", "pipeline.lanes.0.kind=events",
        "pipeline.lanes.1.name=b", "pipeline.lanes.1.kind=events",
        "pipeline.endpoints.0.name=in", "pipeline.endpoints.0.direction=ingress", "pipeline.endpoints.0.lane=a",
        "pipeline.endpoints.1.name=out", "pipeline.endpoints.1.direction=egress", "pipeline.endpoints.1.lane=b",
        "pipeline.roles.0.name=s", "pipeline.roles.0.kind=stage", "pipeline.roles.0.inputs.0=a",
        "pipeline.roles.0.outputs.0=b", "pipeline.roles.0.op=resolver",
        "pipeline.roles.0.resolver_key=py:noisy_stage:shout",
    ]) + "\n")
    r = cli("run", spec, f"--lane-path={ring_dir}", input="x\n", env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "78\n"  # stdout carries only the output messages
    assert "hello from a role" in r.stderr
