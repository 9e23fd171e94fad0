"""Test plugin for the console tests: a real ``byteor console`` process, a headless Chromium driven
by Playwright, pipelines kept fed at a steady rate, and the spec files they run.

Loaded by ``conftest.py`` (``pytest_plugins``); tests import the helpers from here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from obs_support import RunningPipeline, wait_until

BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TOKEN_ENV = "CONSOLE_TEST_TOKEN"
REGISTRY = Path(__file__).parent / "vectors" / "dataguard" / "registry"
DOCS = Path(__file__).resolve().parent.parent / "docs"


class Console:
    """``byteor console`` in its own process on 127.0.0.1 (a free port), stopped with SIGTERM."""

    def __init__(self, root: Path, bundle_dir: Path, scratch: Path, *args: str, token: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_") and k != TOKEN_ENV}
        if token is not None:
            full_env[TOKEN_ENV] = token
            args = (f"--token-env={TOKEN_ENV}", *args)
        full_env.update(env or {})
        self.token = token
        self.stderr_path = scratch / f"console-{uuid.uuid4().hex[:8]}.stderr"
        self._stderr = open(self.stderr_path, "w+", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "byteor"), "console", "--listen=127.0.0.1:0", f"--root={root}", f"--bundle-dir={bundle_dir}",
             *args], stdout=subprocess.DEVNULL, stderr=self._stderr, env=full_env)
        self.url = str(wait_until(self._url, "the console's listening line", timeout=60))

    def _url(self) -> str | None:
        text = self.stderr()
        m = re.search(r"console on (http://127\.0\.0\.1:\d+/)", text)
        if m is None and self.proc.poll() is not None:
            raise AssertionError(f"byteor console exited {self.proc.returncode}: {text}")
        return m.group(1).rstrip("/") if m else None

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text()

    def stop(self) -> int:
        """SIGTERM (as systemd or Ctrl-C would) and the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if not self._stderr.closed:
            self._stderr.close()
        return int(self.proc.returncode)


@pytest.fixture
def console_root() -> Iterator[Path]:
    """A private directory for the pipelines a console test runs (the console is pointed at it, so
    the pipelines of other test runs on this host stay out of its pages and screenshots)."""
    root = Path(f"/dev/shm/byteor-console-t-{uuid.uuid4().hex[:12]}")
    root.mkdir(mode=0o700)
    yield root
    leftovers = [(p, sorted(x.name for x in p.iterdir()) if p.is_dir() else None) for p in root.iterdir()]
    shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"leftover: {leftovers}"


@pytest.fixture
def start_console(console_root: Path, tmp_path: Path) -> Iterator[Callable[..., Console]]:
    """``start_console(*args, token=...)`` runs ``byteor console`` over ``console_root``; each one is
    stopped at the end of the test and must exit 0."""
    started: list[Console] = []

    def start(*args: str, token: str | None = None, env: dict[str, str] | None = None) -> Console:
        c = Console(console_root, tmp_path / "bundles", tmp_path, *args, token=token, env=env)
        started.append(c)
        return c

    yield start
    codes = [(c.stop(), c.stderr()) for c in started]
    assert all(code == 0 for code, _ in codes), codes


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's package) driven by Playwright; one per test module."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium (run it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Feeder:
    """Keeps writing lines from ``make(i)`` to a running pipeline's stdin, ``per_tick`` every 0.1 s."""

    def __init__(self, run: RunningPipeline, make: Callable[[int], str], per_tick: int) -> None:
        self.run = run
        self.make = make
        self.per_tick = per_tick
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            lines = [self.make(self.sent + k) for k in range(self.per_tick)]
            try:
                self.run.send(lines)
            except (BrokenPipeError, ValueError, OSError):
                return
            self.sent += len(lines)
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def fed_pipeline(console_root: Path, tmp_path: Path) -> Iterator[Callable[..., tuple[RunningPipeline, Feeder]]]:
    """``fed_pipeline(spec, make, per_tick, *args)``: ``byteor run`` under ``console_root`` (its output
    thrown away) fed steadily; stopped (drained) at the end of the test."""
    started: list[tuple[RunningPipeline, Feeder]] = []

    def start(spec: Path, make: Callable[[int], str], per_tick: int, *args: str,
              env: dict[str, str] | None = None) -> tuple[RunningPipeline, Feeder]:
        run = RunningPipeline(spec, console_root / spec.stem, tmp_path, "--output-file=/dev/null", *args, env=env,
                              cwd=spec.parent)
        feeder = Feeder(run, make, per_tick)
        started.append((run, feeder))
        return run, feeder

    yield start
    for run, feeder in started:
        feeder.stop()
        run.kill()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    return wait_until(check, what, timeout=timeout, interval=0.1)
