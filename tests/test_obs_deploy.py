"""Deploy files: systemd units that systemd accepts, one Containerfile per product, a Grafana
dashboard that only queries metrics byteor exports (its PromQL is evaluated by a real Prometheus
in test_obs_prometheus.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from byteor.cli import PRODUCTS
from byteor.obs.metrics import METRICS
from obs_support import DEPLOY, dashboard_exprs

BIN = Path(sys.executable).parent
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "ProtectHome=yes",
             "PrivateTmp=yes", "LimitMEMLOCK=infinity", "LimitRTPRIO=", "SystemCallFilter=@system-service")


def exported_names() -> set[str]:
    names = set()
    for name, kind, _labels, _doc in METRICS:
        names.add(name)
        if kind == "counter":
            names.add(name.removesuffix("_total"))
    return names


@pytest.mark.parametrize("product", PRODUCTS)
def test_systemd_unit_per_product_verifies_and_is_hardened(product: str, tmp_path: Path) -> None:
    unit = DEPLOY / "systemd" / f"{product}@.service"
    text = unit.read_text()
    for option in HARDENING:
        assert re.search(rf"(?m)^{re.escape(option)}", text), f"{unit.name}: missing {option}"
    assert f"/opt/byteor/bin/{product} run /etc/byteor/%i/spec.kv" in text
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is not installed (Debian's systemd package)")
    # an instance of the template, with the program path of this checkout (verify checks it exists)
    instance = tmp_path / f"{product}@demo.service"
    instance.write_text(text.replace("/opt/byteor/bin/", f"{BIN}/"))
    proc = subprocess.run([exe, "verify", str(instance)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_containerfile_per_product() -> None:
    for product in PRODUCTS:
        text = (DEPLOY / "containers" / f"Containerfile.{product.removeprefix('byteor-')}").read_text()
        assert f'ENTRYPOINT ["{product}", "run"' in text
        assert "EXPOSE 9464" in text and "/healthz" in text and "USER 10001" in text
        assert "--metrics=0.0.0.0:9464" in text and "--log-format=json" in text


def test_dashboard_queries_only_exported_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    used = {m for e in exprs for m in re.findall(r"\bbyteor_[a-z_]+\b", e)}
    assert used <= exported_names(), used - exported_names()
    # the dashboard covers the families an operator needs first
    for name in ("byteor_messages_out_total", "byteor_stage_lag_messages", "byteor_stage_restarts_total",
                 "byteor_ring_fill_ratio", "byteor_lane_fill_ratio", "byteor_actions_failed_total",
                 "byteor_dataguard_rejected_total", "byteor_adapter_connected", "byteor_ready"):
        assert name in used, name


def test_observability_page_names_every_metric_and_event() -> None:
    page = (DEPLOY.parent / "docs" / "observability.md").read_text()
    for name, *_ in METRICS:
        assert f"`{name}`" in page, name
    for event in ("run.started", "metrics.listening", "policy.decision", "stage.started", "stage.running",
                  "stage.restarted", "stage.hung", "stage.failed", "stage.exited", "tuning.knob", "action.failed",
                  "run.draining", "run.finished", "run.summary"):
        assert f"`{event}`" in page, event
