"""The bounded side-effect records: counts always exact, kept records capped, files merged back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from byteor.runtime._events import EventLog, FileEventRecorder


def _event(i: int, decision: str) -> dict[str, object]:
    return {"action": "http_post", "stage": "http_post:http://x/", "target": "http://x/",
            "idempotency_key": f"sha256:{i:064x}", "decision": decision, "bytes": i}


def test_event_log_counts_everything_and_keeps_the_first_dry_runs() -> None:
    log = EventLog(limit=5)
    for i in range(1000):
        log(_event(i, "Allow"))
    for i in range(12):
        log(_event(i, "DryRunOnly"))
    assert log.records == [_event(i, "DryRunOnly") for i in range(5)]
    assert log.summary() == {"total": 1012, "by_decision": {"Allow": 1000, "DryRunOnly": 12},
                             "records_kept": 5, "records_omitted": 7}


def test_file_recorder_writes_only_kept_records_then_counts(tmp_path: Path) -> None:
    path = tmp_path / "stage.events"
    rec = FileEventRecorder(str(path), limit=3)
    for i in range(50):
        rec(_event(i, "Allow"))
    for i in range(4):
        rec(_event(i, "DryRunOnly"))
    rec.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4  # three records and one counts line; no line per performed action
    assert lines[-1] == {"counts": {"Allow": 50, "DryRunOnly": 1}}
    log = EventLog(limit=2)
    log.merge_file(str(path))
    log.merge_file(str(tmp_path / "missing.events"))
    assert log.summary() == {"total": 54, "by_decision": {"Allow": 50, "DryRunOnly": 4},
                             "records_kept": 2, "records_omitted": 2}


def test_records_of_a_killed_process_survive(tmp_path: Path) -> None:
    """Written records are flushed at once: a SIGKILLed stage loses only its counts line."""
    path = tmp_path / "killed.events"
    code = (
        "import os, signal, sys\n"
        "from byteor.runtime._events import FileEventRecorder\n"
        f"rec = FileEventRecorder({str(path)!r})\n"
        "for i in range(3):\n"
        "    rec({'decision': 'DryRunOnly', 'bytes': i})\n"
        "rec({'decision': 'Allow', 'bytes': 9})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
    assert proc.returncode == -9
    with path.open("a") as fh:
        fh.write('{"decision": "DryRu')  # a line cut short is skipped
    log = EventLog()
    log.merge_file(str(path))
    assert [r["bytes"] for r in log.records] == [0, 1, 2]
    assert log.summary()["by_decision"] == {"DryRunOnly": 3}
