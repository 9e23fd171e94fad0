"""The dead-letter journal: side effects that finally failed, kept for ``redrive``.

A private directory (0700, checked like every directory byteor writes: see :mod:`byteor._fileio`;
the input bytes may be sensitive) holding two journal lanes
(:mod:`byteor.lanes.journal`: append-only segmented logs, crash-consistent, ``fsync="always"`` so
an acknowledged record survives a power loss):

``records/``
    one JSON record per failed action: ``{"v": 1, "id", "time", "stage_key", "family", "target",
    "idempotency_key", "error", "decision", "spec_hash", "input_b64"}``
``redriven/``
    one JSON record ``{"v": 1, "id", "time"}`` per record delivered by a later redrive.

A journal has one writer at a time; an append waits (bounded, :data:`LOCK_WAIT_S`) for another
process that is appending to the same directory. A record is at most :data:`MAX_RECORD_BYTES`
(inputs up to about 3 MiB); a larger one cannot be dead-lettered and the error says so.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from .._errors import ActionFailed, ArtifactError, PipelineFailed
from .._fileio import ensure_private_dir
from .._formats import format_rfc3339, utc_now
from ..lanes.journal import JournalReader, JournalWriter

__all__ = ["DEAD_LETTER_VERSION", "MAX_RECORD_BYTES", "RECORDS_LANE", "REDRIVEN_LANE", "DeadLetterJournal",
           "DeadLetterRecord"]

RECORDS_LANE = "records"
REDRIVEN_LANE = "redriven"
MAX_RECORD_BYTES = 4 * 1024 * 1024
_SEGMENT_BYTES = 2 * MAX_RECORD_BYTES
LOCK_WAIT_S = 10.0
DEAD_LETTER_VERSION = 1
_FIELDS = ("id", "time", "stage_key", "family", "target", "idempotency_key", "error", "decision",
           "spec_hash")


@dataclass(frozen=True)
class DeadLetterRecord:
    stage_key: str
    family: str
    target: str
    idempotency_key: str
    error: str
    decision: str
    spec_hash: str
    input: bytes
    id: str = ""
    time: str = ""
    redriven: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"v": DEAD_LETTER_VERSION, "id": self.id, "time": self.time, "stage_key": self.stage_key,
                "family": self.family, "target": self.target, "idempotency_key": self.idempotency_key,
                "error": self.error, "decision": self.decision, "spec_hash": self.spec_hash,
                "input_b64": base64.b64encode(self.input).decode("ascii")}


def _append(directory: str, obj: dict[str, Any]) -> None:
    payload = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")
    if len(payload) > MAX_RECORD_BYTES:
        raise ActionFailed(f"dead-letter record of {len(payload)} bytes is over the {MAX_RECORD_BYTES}-byte "
                           f"limit; it was not written to {directory}")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            writer = JournalWriter(directory, segment_bytes=_SEGMENT_BYTES, slot_bytes=MAX_RECORD_BYTES,
                                   fsync="always")
            break
        except PipelineFailed:  # another process is appending right now
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    with writer:
        writer.append(payload)


def _read(directory: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if not os.path.isdir(directory):
        return
    for index, raw in enumerate(JournalReader(directory).records()):
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ArtifactError(f"{directory}: record {index} is not JSON") from None
        if not isinstance(obj, dict):
            raise ArtifactError(f"{directory}: record {index} is not a JSON object")
        v = obj.get("v")
        if not isinstance(v, int) or isinstance(v, bool):
            raise ArtifactError(f"{directory}: record {index} has no version `v`")
        if v > DEAD_LETTER_VERSION:
            raise ArtifactError(f"{directory}: record {index} has dead-letter version {v}, newer than this "
                                f"byteor reads ({DEAD_LETTER_VERSION}); upgrade byteor")
        yield index, obj


class DeadLetterJournal:
    """Append failed actions, list them, and mark them redriven."""

    def __init__(self, directory: str, *, create: bool = True) -> None:
        self.directory = directory
        if create:
            ensure_private_dir(directory)
        elif not os.path.isdir(directory):
            raise ArtifactError(f"{directory}: dead-letter directory does not exist")
        self.path = os.path.join(directory, RECORDS_LANE)
        self.done_path = os.path.join(directory, REDRIVEN_LANE)

    def append(self, record: DeadLetterRecord) -> DeadLetterRecord:
        """Write one record (an ``id`` and ``time`` are assigned when empty) and return it."""
        rec = replace(record, id=record.id or uuid.uuid4().hex, time=record.time or format_rfc3339(utc_now()),
                      redriven=False)
        _append(self.path, rec.to_json())
        return rec

    def _done(self) -> set[str]:
        done: set[str] = set()
        for index, obj in _read(self.done_path):
            rid = obj.get("id")
            if not isinstance(rid, str):
                raise ArtifactError(f"{self.done_path}: record {index} has no `id`")
            done.add(rid)
        return done

    def records(self) -> list[DeadLetterRecord]:
        """Every record in append order, each with ``redriven`` set from ``redriven.jsonl``."""
        done = self._done()
        out: list[DeadLetterRecord] = []
        for index, obj in _read(self.path):
            for name in (*_FIELDS, "input_b64"):
                if not isinstance(obj.get(name), str):
                    raise ArtifactError(f"{self.path}: record {index}: field `{name}` is missing or "
                                        "not a string")
            try:
                data = base64.b64decode(obj["input_b64"], validate=True)
            except (binascii.Error, ValueError):
                raise ArtifactError(f"{self.path}: record {index}: `input_b64` is not base64") from None
            out.append(DeadLetterRecord(
                stage_key=obj["stage_key"], family=obj["family"], target=obj["target"],
                idempotency_key=obj["idempotency_key"], error=obj["error"], decision=obj["decision"],
                spec_hash=obj["spec_hash"], input=data, id=obj["id"], time=obj["time"],
                redriven=obj["id"] in done,
            ))
        return out

    def pending(self) -> list[DeadLetterRecord]:
        return [r for r in self.records() if not r.redriven]

    def mark_redriven(self, record_id: str) -> None:
        now = format_rfc3339(utc_now())
        _append(self.done_path, {"v": DEAD_LETTER_VERSION, "id": record_id, "time": now})
