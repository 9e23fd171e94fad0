"""The per-run counters file: rows shared between processes, surviving the process that counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from byteor.obs import counters


def _rows() -> list[tuple[str, int, int]]:
    return [("session", counters.KIND_SESSION, 0), ("bump", counters.KIND_STAGE, 0),
            ("bump", counters.KIND_STAGE, 1)]


def test_rows_are_created_zeroed_and_named(tmp_path: Path) -> None:
    path = tmp_path / counters.COUNTERS_FILE
    table = counters.CountersFile.create(str(path), _rows())
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        reader = counters.CountersFile.open(str(path))
        rows = reader.rows()
        assert [(r["name"], r["kind"], r["shard"]) for r in rows] == [("session", "session", 0),
                                                                       ("bump", "stage", 0), ("bump", "stage", 1)]
        assert all(r["state"] == "unknown" and r["actions_performed"] == 0 for r in rows)
        row = table.row(2)
        row.add(counters.WORDS["actions_performed"], 5)
        incr = row.incrementer(counters.WORDS["actions_performed"])
        incr()
        row.set(counters.WORDS["state"], counters.RUNNING)
        seen = reader.rows()[2]
        assert seen["actions_performed"] == 6 and seen["state"] == "running"
        assert reader.rows()[1]["actions_performed"] == 0
        reader.close()
    finally:
        table.close()


def test_a_malformed_or_missing_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "counters.bin"
    bad.write_bytes(b"NOTBYTEOR" + bytes(600))
    with pytest.raises(ValueError, match="not a byteor counters file"):
        counters.CountersFile.open(str(bad))
    with pytest.raises(FileNotFoundError):
        counters.CountersFile.open(str(tmp_path / "missing.bin"))
    table = counters.CountersFile.create(str(tmp_path / "c.bin"), [("session", counters.KIND_SESSION, 0)])
    with pytest.raises(IndexError, match="no row 3"):
        table.row(3)
    table.close()


def test_an_unbound_process_counts_into_a_detached_row() -> None:
    row = counters.current()
    assert not row.live
    counters.bind_config(None)  # a child config without counters changes nothing
    assert counters.current() is row


_CHILD = """
import sys, time
from byteor.obs import counters
counters.bind_config([sys.argv[1], int(sys.argv[2])])
row = counters.current()
incr = row.incrementer(counters.WORDS["actions_performed"])
print(row.live, flush=True)
for _ in range(int(sys.argv[3])):
    incr()
print("counted", flush=True)
time.sleep(60)
"""


def test_counts_survive_a_killed_process_and_continue_in_its_successor(tmp_path: Path) -> None:
    path = str(tmp_path / "counters.bin")
    table = counters.CountersFile.create(path, _rows())
    try:
        for count, expected in ((1000, 1000), (500, 1500)):
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, path, "1", str(count)],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "True"
            assert proc.stdout.readline().strip() == "counted"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
            assert table.row(1).get(counters.WORDS["actions_performed"]) == expected
    finally:
        table.close()


def test_every_calls_a_publisher_from_a_side_thread_until_cancelled() -> None:
    calls: list[float] = []
    cancel = counters.every(lambda: calls.append(time.monotonic()))
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    cancel()
    assert len(calls) >= 2
    n = len(calls)
    time.sleep(0.6)
    assert len(calls) <= n + 1
