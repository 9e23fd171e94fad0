"""Lifecycle events: text lines for a person, one JSON object per line for a log pipeline, and no
secret in either."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from byteor.obs.redact import mask, mask_value

_EMIT = """
import sys
from byteor.obs import configure, emit
configure(sys.argv[1], pipeline="orders")
emit("stage.restarted", "stage 1 'bump' (pid 7) died (signal SIGKILL); restarting it", level="warning",
     stage="stage 1 'bump'", restarts=1)
emit("stage.started", "stage 1 'bump' started (pid 8)", text=False, stage="stage 1 'bump'")
emit("debug.detail", "only for machines", level="debug")
emit("run.summary", "3 in, 3 out", who="byteor run", ts="collides", pid=0, messages_in=3)
"""


def _emit(fmt: str, env: dict[str, str] | None = None) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _EMIT, fmt], capture_output=True, text=True, check=True,
                          env=env, timeout=60)
    assert proc.stdout == ""
    return proc.stderr.splitlines()


def test_text_events_show_what_a_person_needs() -> None:
    lines = _emit("text")
    assert lines == ["byteor: stage 1 'bump' (pid 7) died (signal SIGKILL); restarting it",
                     "byteor run: 3 in, 3 out"]


def test_json_events_are_one_object_per_line_with_the_documented_keys() -> None:
    records = [json.loads(line) for line in _emit("json")]
    assert [r["event"] for r in records] == ["stage.restarted", "stage.started", "debug.detail", "run.summary"]
    first = records[0]
    assert list(first)[:6] == ["ts", "level", "pipeline", "event", "message", "pid"]
    assert first["level"] == "warning" and first["pipeline"] == "orders"
    assert first["stage"] == "stage 1 'bump'" and first["restarts"] == 1
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert records[2]["level"] == "debug"
    # a field may not replace the record's own keys
    assert records[3]["ts"] != "collides" and records[3]["pid"] != 0 and records[3]["messages_in"] == 3


def test_configure_refuses_an_unknown_format() -> None:
    from byteor.obs import configure

    with pytest.raises(ValueError, match="text, json"):
        configure("xml")


def test_secrets_are_masked_in_messages_and_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_API_TOKEN", "tok-4f1e9c2b7a")
    monkeypatch.setenv("BROKER_URL", "amqp://alice:s3cr3t-pw@127.0.0.1:5672/vh")
    text = "connect amqp://alice:s3cr3t-pw@127.0.0.1:5672/vh failed; header tok-4f1e9c2b7a; s3cr3t-pw"
    out = mask(text)
    assert "tok-4f1e9c2b7a" not in out and "s3cr3t-pw" not in out and "alice" not in out
    assert "amqp://<redacted>@127.0.0.1:5672/vh" in out
    assert mask("https://h.example/hook?token=abcdef123456&x=1") == "https://h.example/hook?token=<redacted>&x=1"
    assert mask("plain text, no secret") == "plain text, no secret"
    nested = mask_value({"name": "amqp://alice:s3cr3t-pw@h/q", "n": 3, "tags": ["tok-4f1e9c2b7a"]})
    assert nested == {"name": "amqp://<redacted>@h/q", "n": 3, "tags": ["<redacted>"]}


def test_json_log_lines_carry_no_secret(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ORDERS_API_TOKEN": "tok-4f1e9c2b7a"}
    script = ("from byteor.obs import configure, emit\nconfigure('json')\n"
              "emit('adapter.reconnecting', 'kafka://bob:tok-4f1e9c2b7a@127.0.0.1:9/t down',"
              " uri='kafka://bob:tok-4f1e9c2b7a@127.0.0.1:9/t')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True,
                          timeout=60)
    assert "tok-4f1e9c2b7a" not in proc.stderr and "bob" not in proc.stderr
    assert json.loads(proc.stderr)["uri"] == "kafka://<redacted>@127.0.0.1:9/t"


def test_runtime_config_log_format_makes_the_run_speak_json(cli: Callable[..., subprocess.CompletedProcess[str]],
                                                            examples: Path, tmp_path: Path, ring_dir: Path) -> None:
    cfg = tmp_path / "runtime_config.txt"
    cfg.write_text("runtime.log_format=json\n")
    proc = cli("run", examples / "chain.kv", f"--config={cfg}", "--input-ascii=hi", "--output=ascii",
               f"--ring-path={ring_dir}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ij\n"
    events = [json.loads(line)["event"] for line in proc.stderr.splitlines()]
    assert "run.started" in events and "run.finished" in events and "stage.exited" in events
    cfg.write_text("runtime.log_format=xml\n")
    bad = cli("run", examples / "chain.kv", f"--config={cfg}", "--input-ascii=hi")
    assert bad.returncode == 2 and "runtime.log_format" in bad.stderr and "line 1" in bad.stderr
