"""Side-effect records of a run, bounded: performed actions are counted, dry-run records are kept.

Action stages call ``StageContext.recorder(event)`` once per message (``decision`` ``Allow`` after a
performed POST/exec, ``DryRunOnly`` for a suppressed one). A long live run must not keep every event
in memory nor print one line per POST, so:

* :class:`EventLog` (the run's own recorder) counts every event by decision and keeps the first
  :data:`MAX_RECORDS` non-``Allow`` records (the dry-run evidence); later ones are only counted.
* :class:`FileEventRecorder` (in a stage or role process) appends the first :data:`MAX_RECORDS`
  non-``Allow`` records to a JSON-lines file, one line each, and, when the process ends, one line
  ``{"counts": {"Allow": n, ...}}`` with what it did not write out; the supervisor's process merges
  the file into its :class:`EventLog` with :meth:`EventLog.merge_file`. A stage killed by a signal
  loses only the counts of its process life (its written records are kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from typing import IO, Any

from .._fileio import open_existing_private

__all__ = ["MAX_RECORDS", "EventLog", "FileEventRecorder"]

#: Dry-run records kept per run (and per stage process); later ones are counted only.
MAX_RECORDS = 10_000
ALLOW = "Allow"


def _open_append(path: str) -> IO[str]:
    """The records file, opened for appending without following a link (closed by the caller)."""
    return os.fdopen(open_existing_private(path, os.O_WRONLY | os.O_APPEND), "a", encoding="utf-8")


class EventLog:
    """The run's recorder: call it with an event dict; see the module docstring."""

    def __init__(self, limit: int = MAX_RECORDS) -> None:
        self.limit = limit
        self.records: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.omitted = 0

    def __call__(self, event: dict[str, Any]) -> None:
        decision = str(event.get("decision", ""))
        self.counts[decision] += 1
        if decision != ALLOW:
            self._keep(event)

    def _keep(self, event: dict[str, Any]) -> None:
        if len(self.records) < self.limit:
            self.records.append(event)
        else:
            self.omitted += 1

    def merge_file(self, path: str) -> None:
        """Add what a :class:`FileEventRecorder` wrote to ``path`` (a missing file adds nothing)."""
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a killed process
                    if not isinstance(obj, dict):
                        continue
                    counts = obj.get("counts")
                    if isinstance(counts, dict) and len(obj) == 1:
                        for decision, n in counts.items():
                            if isinstance(n, int):
                                self.counts[str(decision)] += n
                                if decision != ALLOW:
                                    self.omitted += n
                        continue
                    self.counts[str(obj.get("decision", ""))] += 1
                    self._keep(obj)
        except FileNotFoundError:
            return

    @property
    def performed(self) -> int:
        return self.counts[ALLOW]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, Any]:
        """``{"total", "by_decision", "records_kept", "records_omitted"}`` for the run summary."""
        return {"total": self.total, "by_decision": dict(sorted(self.counts.items())),
                "records_kept": len(self.records), "records_omitted": self.omitted}


class FileEventRecorder:
    """A stage process's recorder (see the module docstring). ``path=None`` writes to stderr."""

    def __init__(self, path: str | None, limit: int = MAX_RECORDS) -> None:
        self.path = path
        self.limit = limit
        self.written = 0
        self.unwritten: Counter[str] = Counter()
        self._fh: IO[str] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        decision = str(event.get("decision", ""))
        if decision == ALLOW or self.written >= self.limit:
            self.unwritten[decision] += 1
            return
        self.written += 1
        line = json.dumps(event, sort_keys=True) + "\n"
        if self.path is None:
            sys.stderr.write("byteor stage: " + line)
            return
        if self._fh is None:
            self._fh = _open_append(self.path)
        self._fh.write(line)
        self._fh.flush()  # a record survives a later crash of this process

    def close(self) -> None:
        """Write the counts line (when anything went uncounted) and close the file."""
        with contextlib.suppress(OSError):
            if self.unwritten:
                line = json.dumps({"counts": dict(sorted(self.unwritten.items()))}) + "\n"
                if self.path is None:
                    if any(d != ALLOW for d in self.unwritten):
                        sys.stderr.write("byteor stage: " + line)
                else:
                    if self._fh is None:
                        self._fh = _open_append(self.path)
                    self._fh.write(line)
            if self._fh is not None:
                self._fh.close()
        self._fh = None
        self.unwritten.clear()
