"""A real Prometheus server scrapes a running multi-process pipeline; PromQL sees the counts and the
lag series, and after SIGKILL of a stage the counters go on from where they were."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

from obs_support import Prometheus, RunningPipeline, dashboard_exprs, http_get, sample, wait_until

REGISTRY = Path(__file__).parent / "vectors" / "dataguard" / "registry"


def test_prometheus_scrapes_counts_and_lag_across_a_stage_kill(
        run_pipeline: Callable[..., RunningPipeline], prometheus: Callable[[list[str]], Prometheus],
        examples: Path) -> None:
    run = run_pipeline(examples / "chain.kv")
    prom = prometheus([run.metrics])
    run.send([f"p{i}" for i in range(100)])
    wait_until(lambda: prom.value('byteor_messages_out_total{job="byteor",pipeline="chain"}') == 100,
               "PromQL: 100 messages out", timeout=60)
    assert prom.value("byteor_messages_in_total") == 100
    assert prom.value('byteor_stage_processed_total{stage="bump"}') == 100
    assert prom.value("up") == 1
    lag = prom.query("byteor_stage_lag_messages")
    assert sorted(r["metric"]["stage"] for r in lag) == ["bump", "emit", "read"]
    assert all(r["metric"]["shard"] == "0" and float(r["value"][1]) == 0 for r in lag)
    # a lag series, not just one point: a range query over the scrapes so far
    series = wait_until(lambda: (r := prom.query('byteor_stage_lag_messages{stage="bump"}[30s]'))
                        and len(r[0]["values"]) >= 2 and r, "two lag samples")
    assert all(float(v) == 0 for _t, v in series[0]["values"])

    os.kill(run.stage_pid("bump"), signal.SIGKILL)
    wait_until(lambda: http_get(f"http://{run.metrics}/readyz")[0] == 200, "ready again after the restart")
    run.send([f"q{i}" for i in range(50)])
    wait_until(lambda: prom.value('byteor_stage_restarts_total{stage="bump"}') == 1
               and prom.value("byteor_messages_out_total") == 150, "PromQL: the restart and 150 out", timeout=60)
    assert prom.value('byteor_stage_processed_total{stage="bump"}') == 150
    # counters never went back: Prometheus saw no counter reset over the whole run
    assert prom.value('resets(byteor_stage_processed_total{stage="bump"}[5m])') == 0
    assert prom.value("resets(byteor_messages_out_total[5m])") == 0
    # every query of the Grafana dashboard is valid PromQL here, and the pipeline's panels have data
    answered = {e: prom.query(e.replace("$pipeline", "chain")) for e in dashboard_exprs()}
    sel = '{pipeline=~"$pipeline"}'
    for expr in (f"rate(byteor_messages_out_total{sel}[1m])", f"byteor_stage_lag_messages{sel}",
                 f"byteor_ring_fill_ratio{sel}", f"increase(byteor_stage_restarts_total{sel}[1h])"):
        assert answered[expr], expr
    rc, out, err = run.finish()
    assert rc == 0, err
    assert len(out.splitlines()) == 150


def test_dataguard_counters_survive_a_killed_stage(run_pipeline: Callable[..., RunningPipeline],
                                                   tmp_path: Path) -> None:
    (tmp_path / "dataguard").mkdir()
    (tmp_path / "dataguard" / "pii.json").write_text(json.dumps({
        "registry_root": str(REGISTRY), "schema_id": 7, "msg_type": 1, "required_version": 2, "mode": "mapkv",
        "flow": "check", "report": str(tmp_path / "pii.report.kv")}))
    spec = tmp_path / "guard.kv"
    spec.write_text("pipeline.name=guard\npipeline.target=SingleRing\n"
                    "pipeline.stages.0.id=guard\npipeline.stages.0.op=resolver\n"
                    "pipeline.stages.0.resolver_key=dataguard:pii\n")
    run = run_pipeline(spec)
    run.send([f"not an envelope {i}" for i in range(40)])

    def guard(name: str, **labels: str) -> float | None:
        return sample(run.scrape(), name, stage="guard", **labels)

    wait_until(lambda: guard("byteor_dataguard_messages_total") == 40, "40 envelopes counted")
    assert guard("byteor_dataguard_rejected_total", reason="decode_err") == 40
    assert guard("byteor_dataguard_output_total", action="drop") == 40
    assert guard("byteor_dataguard_accepted_total") == 0
    os.kill(run.stage_pid("guard"), signal.SIGKILL)
    wait_until(lambda: http_get(f"http://{run.metrics}/readyz")[0] == 200, "ready again after the restart")
    run.send([f"still not an envelope {i}" for i in range(10)])
    wait_until(lambda: guard("byteor_dataguard_messages_total") == 50, "50 envelopes counted across the restart")
    assert guard("byteor_dataguard_rejected_total", reason="decode_err") == 50
    assert sample(run.scrape(), "byteor_messages_dropped_total") == 50
    rc, out, err = run.finish()
    assert rc == 0, err
    assert out == ""
