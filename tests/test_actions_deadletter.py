"""The dead-letter journal and redrive: a failed action lands in the journal with everything needed
to re-send it, and `byteor-actiongraph redrive` delivers it exactly once under a fresh decision."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from byteor import ActionFailed, ArtifactError, load_spec_file, spec_hash
from byteor.actions import DeadLetterJournal, DeadLetterRecord, resolve_action
from byteor.actions.redrive import redrive
from byteor.lanes.journal import JournalWriter
from byteor.policy.gate import gate_run
from policy_support import HttpTarget, new_signer, write_key_set, write_spec


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BYTEOR_HTTP_POST_ALLOWLIST", "BYTEOR_EXEC_ALLOWLIST", "BYTEOR_POLICY_FILE",
                 "BYTEOR_API_BASE_URL", "BYTEOR_AGENT_ID", "BYTEOR_AGENT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BYTEOR_ACTION_RETRY_BASE_MS", "1")
    monkeypatch.setenv("BYTEOR_ACTION_MAX_RETRIES", "1")


def _record(i: int) -> DeadLetterRecord:
    data = bytes([i]) * (i + 1)
    return DeadLetterRecord(stage_key="http_post:http://h/x", family="http_post", target="http://h/x",
                            idempotency_key="sha256:" + hashlib.sha256(data).hexdigest(), error="HTTP 500",
                            decision="Allow", spec_hash="sha256:" + "a" * 64, input=data)


def test_journal_round_trip_and_marking(tmp_path: Path) -> None:
    dl = DeadLetterJournal(str(tmp_path / "dl"))
    written = [dl.append(_record(i)) for i in range(3)]
    assert all(r.id and r.time.endswith("Z") for r in written)
    assert (tmp_path / "dl").stat().st_mode & 0o777 == 0o700
    again = DeadLetterJournal(str(tmp_path / "dl"), create=False)
    assert again.records() == written
    again.mark_redriven(written[1].id)
    assert [r.id for r in again.pending()] == [written[0].id, written[2].id]
    assert [r.redriven for r in again.records()] == [False, True, False]
    with pytest.raises(ArtifactError, match="does not exist"):
        DeadLetterJournal(str(tmp_path / "nope"), create=False)


def test_journal_rejects_newer_versions(tmp_path: Path) -> None:
    dl = DeadLetterJournal(str(tmp_path / "dl"))
    dl.append(_record(0))
    with JournalWriter(dl.path, segment_bytes=8 * 1024 * 1024, slot_bytes=4 * 1024 * 1024) as w:
        w.append(json.dumps({"v": 2, "id": "x"}).encode())
    with pytest.raises(ArtifactError, match="version 2, newer"):
        dl.records()


def _failing_delivery(http_target: HttpTarget, tmp_path: Path) -> tuple[Path, str, Path]:
    key = f"http_post:{http_target.base}/orders"
    spec_path = write_spec(tmp_path, key)
    spec = load_spec_file(spec_path)
    gate = gate_run(spec, spec_path=str(spec_path), spec_hash=spec_hash(spec), posture="dev", dry_run=False,
                    approval=None, key_set=None, dead_letter_dir=str(tmp_path / "dl"))
    stage = resolve_action(key, gate.context)
    http_target.recorder.statuses = [500, 500]  # first try and its one retry
    slot = bytearray(b"order-42" + bytes(24))
    try:
        with pytest.raises(ActionFailed, match="dead-letter"):
            stage.fn(memoryview(slot), 8)
    finally:
        assert stage.close is not None
        stage.close()
    return spec_path, key, tmp_path / "dl"


def test_failed_action_lands_in_dead_letter_and_redrive_delivers_once(http_target: HttpTarget,
                                                                       tmp_path: Path) -> None:
    spec_path, key, dl_dir = _failing_delivery(http_target, tmp_path)
    [rec] = DeadLetterJournal(str(dl_dir)).records()
    assert (rec.stage_key, rec.input, rec.decision) == (key, b"order-42", "Allow")
    assert "HTTP 500" in rec.error
    assert len(http_target.recorder.posts()) == 2
    # prod without approval: the fresh decision refuses, nothing is sent
    spec = load_spec_file(spec_path)
    h = spec_hash(spec)
    with pytest.raises(Exception, match="RequireApproval"):
        gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                 approval=None, key_set=None)
    # dry-run redrive records, sends nothing, marks nothing
    seen: list[dict[str, object]] = []
    dry = gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=True,
                   approval=None, key_set=None, recorder=seen.append)
    out = redrive(DeadLetterJournal(str(dl_dir)), dry.context)
    assert [o.outcome for o in out] == ["dry_run"] and len(seen) == 1
    assert len(http_target.recorder.posts()) == 2
    # approved prod redrive delivers it, once
    signer = new_signer()
    keys = write_key_set(tmp_path / "keys.json", signer)
    live = gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                    approval=signer.issue(h, "prod", ["http_post"]), key_set=str(keys))
    out = redrive(DeadLetterJournal(str(dl_dir)), live.context)
    assert [o.outcome for o in out] == ["delivered"]
    assert redrive(DeadLetterJournal(str(dl_dir)), live.context) == []
    posts = http_target.recorder.posts()
    assert len(posts) == 3 and posts[-1].body == b"order-42"
    assert posts[-1].headers["idempotency-key"] == rec.idempotency_key


def test_redrive_cli_delivers_once(http_target: HttpTarget, tmp_path: Path, cli) -> None:
    spec_path, _, dl_dir = _failing_delivery(http_target, tmp_path)
    other = write_spec(tmp_path, f"http_post:{http_target.base}/elsewhere", filename="other.kv")
    res = cli("redrive", f"--dead-letter={dl_dir}", f"--spec={other}", "--env=dev", "--json",
              script="byteor-actiongraph")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"]["skipped"] == 1  # its stage key is not in that spec
    http_target.recorder.statuses = [503]  # a failed redrive keeps the record pending, exit 1
    res = cli("redrive", f"--dead-letter={dl_dir}", f"--spec={spec_path}", "--env=dev",
              script="byteor-actiongraph", env={"BYTEOR_ACTION_MAX_RETRIES": "0"})
    assert res.returncode == 1 and "failed" in res.stdout
    res = cli("redrive", f"--dead-letter={dl_dir}", f"--spec={spec_path}", "--env=dev",
              script="byteor-actiongraph")
    assert res.returncode == 0, res.stderr
    assert "delivered" in res.stdout and "1 delivered" in res.stdout
    res = cli("redrive", f"--dead-letter={dl_dir}", f"--spec={spec_path}", "--env=dev",
              script="byteor-actiongraph")
    assert res.returncode == 0 and "nothing to redrive" in res.stdout
    bodies = [p.body for p in http_target.recorder.posts()]
    assert bodies == [b"order-42"] * 4  # 2 original attempts, 1 failed redrive, 1 delivery
    res = cli("redrive", f"--dead-letter={dl_dir}", f"--spec={spec_path}", "--env=prod",
              script="byteor-actiongraph")
    assert res.returncode == 4 and "RequireApproval" in res.stderr
    res = cli("redrive", f"--dead-letter={tmp_path / 'missing'}", f"--spec={spec_path}",
              script="byteor-actiongraph")
    assert res.returncode == 2 and "does not exist" in res.stderr
