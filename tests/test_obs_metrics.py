"""``run --metrics``: the Prometheus endpoint, /healthz and /readyz of a running multi-process pipeline."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from byteor.obs.metrics import METRICS, parse_listen
from obs_support import RunningPipeline, http_get, sample, wait_until
from policy_support import HttpTarget, write_spec

RunPipeline = Callable[..., RunningPipeline]


def test_metrics_count_messages_stages_and_rings(run_pipeline: RunPipeline, examples: Path) -> None:
    run = run_pipeline(examples / "chain.kv", "--log-format=json")
    run.send([f"m{i}" for i in range(50)])
    # the supervisor marks a stage running at its next look after the stage registered (every 50 ms)
    samples = wait_until(lambda: (s := run.scrape()) and sample(s, "byteor_messages_out_total") == 50
                         and sample(s, "byteor_ready") == 1 and s, "50 messages out, every stage running")
    assert sample(samples, "byteor_messages_in_total", pipeline="chain") == 50
    assert sample(samples, "byteor_messages_dropped_total") == 0
    for stage in ("read", "bump", "emit"):
        assert sample(samples, "byteor_stage_processed_total", stage=stage, shard="0") == 50
        assert sample(samples, "byteor_stage_lag_messages", stage=stage) == 0
        assert sample(samples, "byteor_stage_restarts_total", stage=stage) == 0
        assert sample(samples, "byteor_stage_up", stage=stage) == 1
        assert sample(samples, "byteor_stage_state", stage=stage, state="running") == 1
    assert sample(samples, "byteor_ring_capacity_messages", shard="0") == 1024
    assert sample(samples, "byteor_ring_fill_ratio", shard="0") == 0
    info = [lab for (name, lab), _v in samples.items() if name == "byteor_pipeline_info"]
    assert len(info) == 1 and dict(info[0])["spec_hash"] == run.state["spec_hash"]
    assert sample(samples, "byteor_ready") == 1 and sample(samples, "byteor_up") == 1
    assert sample(samples, "byteor_tuning_knob_state", role="bump", knob="wait", state="Applied") == 1
    # every exported family is documented in METRICS (and so in docs/observability.md)
    documented = {name for name, *_ in METRICS}
    exported = {name for name, _lab in samples if name.startswith("byteor_")}
    assert exported <= documented | {"byteor_pipeline_info"}, exported - documented
    assert http_get(f"http://{run.metrics}/healthz") == (200, "ok\n")
    assert http_get(f"http://{run.metrics}/readyz") == (200, "ready\n")
    assert http_get(f"http://{run.metrics}/nothing")[0] == 404
    rc, out, err = run.finish()
    assert rc == 0, err
    assert out.splitlines()[:2] == ["n1", "n2"]  # add_u8 adds 1 to every byte
    assert '"event":"metrics.listening"' in err and '"event":"run.finished"' in err


def test_readyz_is_unready_while_a_stage_restarts_and_counters_do_not_reset(run_pipeline: RunPipeline,
                                                                             examples: Path) -> None:
    run = run_pipeline(examples / "chain.kv", "--log-format=json")
    run.send([f"a{i}" for i in range(20)])
    wait_until(lambda: sample(run.scrape(), "byteor_messages_out_total") == 20, "20 messages out")
    wait_until(lambda: http_get(f"http://{run.metrics}/readyz")[0] == 200, "ready")
    victim = run.stage_pid("bump")
    os.kill(victim, signal.SIGKILL)
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = http_get(f"http://{run.metrics}/readyz")
        seen.append((status, body))
        if status == 200 and any(s == 503 for s, _ in seen):
            break
        time.sleep(0.002)
    unready = [body for status, body in seen if status == 503]
    assert unready, f"never unready after SIGKILL of the stage: {seen[:3]}"
    assert any("'bump'" in body and ("starting" in body or "restarting" in body) for body in unready), unready
    assert seen[-1] == (200, "ready\n")
    run.send([f"b{i}" for i in range(30)])
    samples = wait_until(lambda: (s := run.scrape()) and sample(s, "byteor_messages_out_total") == 50 and s,
                         "50 messages out after the restart")
    assert sample(samples, "byteor_stage_restarts_total", stage="bump") == 1
    assert sample(samples, "byteor_stage_processed_total", stage="bump") == 50
    assert run.stage_pid("bump") != victim
    rc, _out, err = run.finish()
    assert rc == 0, err
    assert '"event":"stage.restarted"' in err and "restarting it" in err


def test_lanegraph_metrics_show_lanes_roles_and_journals(run_pipeline: RunPipeline, examples: Path,
                                                         tmp_path: Path) -> None:
    run = run_pipeline(examples / "lanegraph.kv", f"--journal-dir={tmp_path / 'journal'}")
    run.send([f"x{i}" for i in range(40)])
    samples = wait_until(lambda: (s := run.scrape()) and sample(s, "byteor_messages_out_total") == 40
                         and sample(s, "byteor_lane_written_total", lane="audit") == 40
                         and sample(s, "byteor_ready") == 1 and s,
                         "40 messages through the graph and into the journal")
    assert sample(samples, "byteor_messages_in_total") == 40
    assert sample(samples, "byteor_stage_processed_total", stage="bump") == 40
    assert sample(samples, "byteor_stage_processed_total", stage="to-journal") == 40
    assert sample(samples, "byteor_stage_up", stage="to-journal") == 1
    assert sample(samples, "byteor_lane_capacity_messages", lane="in") == 1024
    assert sample(samples, "byteor_lane_fill_messages", lane="bumped") is not None
    assert sample(samples, "byteor_journal_segments", lane="audit") == 1
    assert (sample(samples, "byteor_journal_bytes", lane="audit") or 0) > 0
    assert sample(samples, "byteor_lane_dropped_total", lane="in") == 0
    assert sample(samples, "byteor_lane_repaired_total", lane="in") == 0
    rc, out, err = run.finish()
    assert rc == 0, err
    assert len(out.splitlines()) == 40


def test_side_effects_are_counted_by_decision(run_pipeline: RunPipeline, tmp_path: Path) -> None:
    spec = tmp_path / "post.kv"
    spec.write_text("pipeline.name=post\npipeline.target=SingleRing\n"
                    "pipeline.stages.0.id=notify\npipeline.stages.0.op=resolver\n"
                    "pipeline.stages.0.resolver_key=http_post:https://hooks.invalid/notify\n")
    run = run_pipeline(spec, "--dry-run", env={"BYTEOR_HTTP_POST_ALLOWLIST": "https://hooks.invalid/"})
    run.send(["one", "two", "three"])
    samples = wait_until(lambda: (s := run.scrape()) and sample(s, "byteor_messages_out_total") == 3 and s,
                         "3 messages out")
    assert sample(samples, "byteor_policy_decisions_total", stage="notify", outcome="DryRunOnly") == 3
    assert sample(samples, "byteor_policy_decisions_total", stage="notify", outcome="Allow") == 0
    assert sample(samples, "byteor_actions_performed_total", stage="notify") == 0
    assert sample(samples, "byteor_policy_stage_decision", stage="notify", decision="DryRunOnly") == 1
    rc, _out, err = run.finish()
    assert rc == 0, err


def test_bad_metrics_addresses_are_usage_errors(cli: Callable[..., object], examples: Path, tmp_path: Path) -> None:
    for value, why in (("nonsense", "is not HOST:PORT"), ("127.0.0.1:99999", "port must be 0..65535"),
                       (":9000", "is not HOST:PORT")):
        proc = cli("run", examples / "chain.kv", f"--metrics={value}", "--input-ascii=x")
        assert proc.returncode == 2, proc.stderr  # type: ignore[attr-defined]
        assert f"--metrics: {value!r}" in proc.stderr and why in proc.stderr  # type: ignore[attr-defined]
        assert "Traceback" not in proc.stderr  # type: ignore[attr-defined]
    proc = cli("run", examples / "chain.kv", "--metrics=127.0.0.1:0", "--sp", "--input-ascii=x")
    assert proc.returncode == 2 and "--sp runs in one process" in proc.stderr  # type: ignore[attr-defined]
    cfg = tmp_path / "runtime_config.txt"
    cfg.write_text("runtime.metrics=localhost\n")
    proc = cli("run", examples / "chain.kv", f"--config={cfg}", "--input-ascii=x")
    assert proc.returncode == 2 and "line 1" in proc.stderr and "runtime.metrics" in proc.stderr  # type: ignore[attr-defined]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cli("run", examples / "chain.kv", f"--metrics=127.0.0.1:{port}", "--input-ascii=x")
        assert proc.returncode == 2 and "cannot listen" in proc.stderr  # type: ignore[attr-defined]


def test_parse_listen_accepts_hosts_and_ipv6() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("localhost:80") == ("localhost", 80)


def test_performed_side_effects_are_counted(run_pipeline: RunPipeline, http_target: HttpTarget,
                                            tmp_path: Path) -> None:
    spec = write_spec(tmp_path, f"http_post:{http_target.base}/hook", name="posting")
    run = run_pipeline(spec)
    run.send(["a", "b", "c", "d"])
    samples = wait_until(lambda: (s := run.scrape()) and sample(s, "byteor_messages_out_total") == 4 and s,
                         "4 messages out")
    assert sample(samples, "byteor_actions_performed_total", stage="act1") == 4
    assert sample(samples, "byteor_actions_failed_total", stage="act1") == 0
    assert sample(samples, "byteor_actions_dead_lettered_total", stage="act1") == 0
    assert sample(samples, "byteor_policy_decisions_total", stage="act1", outcome="Allow") == 4
    assert sample(samples, "byteor_policy_stage_decision", stage="act1", decision="Allow") == 1
    assert len(http_target.recorder.posts()) == 4
    rc, _out, err = run.finish()
    assert rc == 0, err
