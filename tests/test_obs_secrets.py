"""No secret from the environment or from a URI reaches a metric label, a log line or ``top``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obs_support import http_get, parse_metrics, wait_until

TOKEN = "tok-9f8e7d6c5b4a"
PASSWORD = "pw-1a2b3c4d5e"
SECRETS = (TOKEN, PASSWORD, "svc-user")

# A session with an adapter-like source named by a URI with credentials (and the token in its query),
# disconnected, so /readyz names it; a py: stage that fails with the token in its message.
DRIVER = """
import sys, threading
from byteor import Batch, RunOptions, RunSession, Source
from byteor.edges import CollectSink

class Broker(Source):
    def __init__(self):
        self.sent = False
    def next_batch(self, max_messages):
        if sys.stdin.closed:
            return None
        if not self.sent:
            self.sent = True
            return Batch([b"one", b"two"], position=2)
        return Batch([], position=2)
    def wait(self, timeout):
        threading.Event().wait(timeout)
    def describe(self):
        return {"name": sys.argv[3], "connected": False, "position": 2, "lag": 3}

session = RunSession(sys.argv[1], RunOptions(ring_path=sys.argv[2], metrics="127.0.0.1:0", log_format="json",
                                             wait="block"))
session.start(CollectSink())
print(session.metrics_address, flush=True)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
session.run(Broker(), stop=stop)
session.close()
"""
URI = f"amqp://svc-user:{PASSWORD}@127.0.0.1:5672/orders?token={TOKEN}"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    env["ORDERS_API_TOKEN"] = TOKEN
    env["BROKER_URL"] = f"amqp://svc-user:{PASSWORD}@127.0.0.1:5672/vh"
    return env


def _clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}: {text[:3000]}"


def test_no_secret_in_metrics_readyz_top_or_logs(ring_dir: Path, examples: Path, tmp_path: Path,
                                                 cli: Callable[..., Any]) -> None:
    err_path = tmp_path / "driver.stderr"
    with open(err_path, "w", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(examples / "chain.kv"), str(ring_dir), URI],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=_env(), text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        address = proc.stdout.readline().strip()
        assert address, err_path.read_text()
        body = wait_until(lambda: (r := http_get(f"http://{address}/metrics"))[0] == 200
                          and "byteor_adapter_connected" in r[1] and r[1], "the adapter's metrics")
        _clean(body, "/metrics")
        samples = parse_metrics(body)
        adapter = [dict(lab) for (name, lab), _v in samples.items() if name == "byteor_adapter_connected"]
        assert adapter == [{"adapter": "amqp://<redacted>@127.0.0.1:5672/orders?token=<redacted>",
                            "direction": "source", "endpoint": "ingress", "pipeline": "chain"}]
        assert samples[("byteor_adapter_lag_messages", tuple(sorted({**adapter[0]}.items())))] == 3
        status, ready = http_get(f"http://{address}/readyz")
        assert status == 503 and "is not connected" in ready
        _clean(ready, "/readyz")
        for args in (["--once"], ["--once", "--json"]):
            top = cli("top", str(ring_dir), *args, "--interval=0.1", env={"COLUMNS": "200"})
            assert top.returncode == 0, top.stderr
            _clean(top.stdout + top.stderr, f"top {' '.join(args)}")
        assert "<redacted>" in cli("top", str(ring_dir), "--once", "--interval=0.1", env={"COLUMNS": "200"}).stdout
        snap = cli("snapshot", f"--ring-path={ring_dir}", "--json")
        _clean(snap.stdout, "snapshot --json")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
    logs = err_path.read_text()
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert {"run.started", "metrics.listening", "run.finished"} <= {e["event"] for e in events}
    _clean(logs, "the run's log")


def test_a_stage_failure_with_a_secret_is_masked_in_the_log(ring_dir: Path, tmp_path: Path,
                                                            write_stage_module: Callable[[str], str]) -> None:
    module = write_stage_module("import os\n\ndef leak(msg):\n"
                                "    raise ValueError('upstream refused token ' + os.environ['ORDERS_API_TOKEN'])\n")
    spec = tmp_path / "leak.kv"
    spec.write_text("pipeline.name=leak\npipeline.target=SingleRing\npipeline.stages.0.id=leak\n"
                    f"pipeline.stages.0.op=resolver\npipeline.stages.0.resolver_key=py:{module}:leak\n")
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "byteor"), "run", str(spec), "--input-ascii=x", f"--ring-path={ring_dir}",
                           "--log-format=json"], capture_output=True, text=True, env=_env(), timeout=120,
                          check=False, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    errors = [e for e in events if e["event"] in ("stage.error", "stage.failed")]
    assert errors and all("upstream refused token <redacted>" in e["message"] for e in errors), events
    _clean("\n".join(line for line in proc.stderr.splitlines() if line.startswith("{")), "the JSON log")
