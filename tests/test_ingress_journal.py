"""A SingleRing run given --journal-dir records every message it takes; the incident bundle carries
that journal and the dead-letter journal; replay runs the recorded messages like a LaneGraph journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from byteor.actions import DeadLetterJournal, DeadLetterRecord
from byteor.artifacts import read_incident_bundle
from byteor.lanes.journal import JournalReader
from byteor.replay import ReplayRequest, run_replay
from conftest import EXAMPLES, mode_cli_args


@pytest.mark.parametrize("mode", ["sp", "mp"])
def test_a_singlering_run_records_its_ingress_and_the_bundle_replays_it(mode: str, tmp_path: Path,
                                                                        ring_dir: Path, cli: Any) -> None:
    spec = tmp_path / "chain.kv"
    spec.write_text((EXAMPLES / "chain.kv").read_text())
    journals = tmp_path / "journals"
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(b"msg-%03d\n" % i for i in range(40)))
    r = cli("run", spec, *mode_cli_args(mode, ring_dir), f"--input={src}", f"--journal-dir={journals}",
            "--output=lines", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["journal"] == str(journals / "ingress")
    assert [bytes(m) for m in JournalReader(journals / "ingress").records()] == [b"msg-%03d" % i for i in range(40)]

    dead = DeadLetterJournal(str(tmp_path / "dead-letter"))  # next to the spec: the default location
    dead.append(DeadLetterRecord(stage_key="http_post:http://127.0.0.1:9/x", family="http_post",
                                 target="http://127.0.0.1:9/x", idempotency_key="sha256:00", error="HTTP 503",
                                 decision="Allow", spec_hash=summary["spec_hash"], input=b"lost"))
    bundle = tmp_path / "bundle"
    r = cli("incident-bundle", spec, f"--out={bundle}", f"--journal-dir={journals}")
    assert r.returncode == 0, r.stderr
    read = read_incident_bundle(bundle)
    assert sorted(read.journals) == ["ingress"] and read.dead_letter is not None
    assert [rec.input for rec in DeadLetterJournal(str(read.dead_letter), create=False).records()] == [b"lost"]

    result = run_replay(ReplayRequest(bundle=str(bundle), journal_lane="ingress", last_n=5, mode="dry_run",
                                      posture="dev", out=str(tmp_path / "audit.json")))
    assert list(result.outputs) == [bytes(b + 1 for b in b"msg-%03d" % i) for i in range(35, 40)]
    assert result.audit.input.scanned_records == 40


def test_without_journal_dir_the_bundle_says_why_nothing_was_recorded(tmp_path: Path, cli: Any) -> None:
    spec = tmp_path / "chain.kv"
    spec.write_text((EXAMPLES / "chain.kv").read_text())
    r = cli("incident-bundle", spec, f"--out={tmp_path / 'b'}", "--json")
    assert r.returncode == 0, r.stderr
    absent = read_incident_bundle(tmp_path / "b").manifest["absent"]  # type: ignore[index]
    assert "--journal-dir" in absent["journals/ingress"] and "dead-letter" in absent
