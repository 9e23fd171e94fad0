"""Shared helpers of the observability tests: a ``byteor run`` kept running on a stdin pipe, the
metrics it serves, a real Prometheus server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8")


def parse_metrics(text: str) -> Samples:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` whose labels include ``labels`` (None when absent)."""
    found = [v for (n, lab), v in samples.items() if n == name and set(labels.items()) <= set(lab)]
    assert len(found) <= 1, f"{name} {labels}: {len(found)} samples"
    return found[0] if found else None


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the Grafana dashboard in ``deploy/grafana``."""
    dash = json.loads((DEPLOY / "grafana" / "byteor-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningPipeline:
    """``byteor run SPEC --input=- ...`` in its own process, fed line by line through its stdin."""

    def __init__(self, spec: str | os.PathLike[str], ring_dir: Path, scratch: Path, *args: str,
                 script: str = "byteor", env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.ring_dir = ring_dir
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_") and k != "PYTHONPATH"}
        full_env.update(env or {})
        self.stderr_path = scratch / f"run-{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "w+", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / script), "run", str(spec), "--input=-", "--output=ascii", f"--ring-path={ring_dir}",
             "--metrics=127.0.0.1:0", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=full_env, cwd=cwd, text=True)
        self.state = wait_until(self._session_state, "session_state.json with the metrics address")
        self.metrics = str(self.state["metrics"])

    def _session_state(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"byteor run exited {self.proc.returncode}: {self.stderr()}")
        try:
            state: dict[str, Any] = json.loads((self.ring_dir / "session_state.json").read_text())
        except (OSError, ValueError):
            return None
        return state if state.get("metrics") else None

    def send(self, lines: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines))
        self.proc.stdin.flush()

    def scrape(self) -> Samples:
        status, body = http_get(f"http://{self.metrics}/metrics")
        assert status == 200, body
        return parse_metrics(body)

    def stage_pid(self, stage: str) -> int:
        from byteor.obs import counters

        table = counters.CountersFile.open(str(self.ring_dir / counters.COUNTERS_FILE))
        try:
            pids = [r["pid"] for r in table.rows() if r["name"] == stage and r["kind"] != "session"]
        finally:
            table.close()
        assert len(pids) == 1, pids
        return int(pids[0])

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Close stdin (end of input: the run drains and exits); returns (rc, stdout, stderr)."""
        out, _ = self.proc.communicate(timeout=timeout)
        err = self.stderr()
        self._close()
        return self.proc.returncode, out, err

    def _close(self) -> None:
        self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate(timeout=30)
        if not self._stderr.closed:
            self._close()


@pytest.fixture
def run_pipeline(ring_dir: Path, tmp_path: Path) -> Iterator[Callable[..., RunningPipeline]]:
    """``run_pipeline(spec, *args)`` starts ``byteor run`` on a stdin pipe with ``--metrics``; every
    pipeline it started is stopped (SIGTERM: drained) at the end of the test."""
    started: list[RunningPipeline] = []

    def start(spec: str | os.PathLike[str], *args: str, **kw: Any) -> RunningPipeline:
        p = RunningPipeline(spec, ring_dir, tmp_path, *args, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


class Prometheus:
    """A real Prometheus server (Debian's ``prometheus``) on 127.0.0.1 scraping ``targets`` every second."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.fail("prometheus is not installed: scripts/test.sh installs Debian's package (run it as root)")
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n  - job_name: byteor\n    static_configs:\n"
                          f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
        self.log = tmp / "prometheus.log"
        self._log = open(self.log, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(self._ready, "prometheus to be ready", timeout=60)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return http_get(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http_get(url)
        assert status == 200, body
        data = json.loads(body)
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], Prometheus]]:
    """``prometheus([target, ...])`` starts a Prometheus server scraping the targets; stopped after."""
    servers: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        server = Prometheus(tmp_path / f"prom{len(servers)}", targets)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
