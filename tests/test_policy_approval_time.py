"""Approvals in time and identity: issued_at within a documented clock skew, strictly spelled
timestamps, a lifetime a policy can cap, identity fields compared with the run's configured identity,
and side effects that stop (and are dead-lettered) when the approval in force expires mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from byteor import ApprovalError, load_spec_file, spec_hash
from byteor._formats import b64url_encode
from byteor._stage import StageContext
from byteor.actions import DeadLetterJournal, resolve_action
from byteor.policy.approvals import encode_payload, verify_credential
from byteor.policy.gate import gate_run
from byteor.policy.keys import parse_key_set
from policy_support import HttpTarget, Signer, new_signer, start_server, write_key_set, write_spec

BIN = Path(sys.executable).parent
H = "sha256:" + "1" * 64


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BYTEOR_POLICY_FILE", "BYTEOR_API_BASE_URL", "BYTEOR_ORG_ID", "BYTEOR_PROJECT_ID",
                 "BYTEOR_ENVIRONMENT_ID", "BYTEOR_HTTP_POST_ALLOWLIST"):
        monkeypatch.delenv(name, raising=False)


def _forge(signer: Signer, **fields: Any) -> str:
    """A credential signed by ``signer`` with exactly these payload fields over the defaults (the
    issuing helper only ever writes well-formed timestamps)."""
    now = datetime.now(UTC).replace(microsecond=0)
    base: dict[str, Any] = {
        "v": 1, "kid": signer.kid, "org_id": "acme", "project_id": "shop", "environment_id": "prod-eu",
        "environment_posture": "prod", "spec_hash": H, "capabilities": ["http_post"],
        "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires_at": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "issued_by": "carol", "approval_id": "chg-1",
    }
    base.update(fields)
    payload = encode_payload(base)
    return f"{b64url_encode(payload)}.{b64url_encode(signer.key.sign(payload))}"


def _verify(signer: Signer, cred: str, **kw: Any) -> None:
    keys = parse_key_set([signer.entry], origin="test")
    verify_credential(cred, keys=keys, spec_hash=H, posture="prod", required=["http_post"], **kw)


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_issued_at_beyond_the_clock_skew_is_refused() -> None:
    signer = new_signer()
    now = datetime.now(UTC)
    year_ahead = _forge(signer, issued_at=_stamp(now + timedelta(days=365)),
                        expires_at=_stamp(now + timedelta(days=366)))
    with pytest.raises(ApprovalError, match=r"issued at .* in the future beyond the allowed clock skew of 300 s") \
            as info:
        _verify(signer, year_ahead, max_lifetime=None)
    assert info.value.check == "expiry"
    _verify(signer, _forge(signer, issued_at=_stamp(now + timedelta(minutes=2))))  # within the skew
    backwards = _forge(signer, issued_at=_stamp(now + timedelta(minutes=1)),
                       expires_at=_stamp(now + timedelta(seconds=30)))
    with pytest.raises(ApprovalError, match=r"expires .* before it is issued"):
        _verify(signer, backwards)


@pytest.mark.parametrize("spelling", ["2099-01-01T00:00:00z", "2099-01-01t00:00:00Z", "2099-01-01T00:00:00+00:00",
                                      "2099-01-01T00:00:00.5Z", "2099-01-01 00:00:00Z", "2099-1-1T00:00:00Z"])
def test_timestamps_have_exactly_one_spelling(spelling: str) -> None:
    signer = new_signer()
    with pytest.raises(ApprovalError, match="`expires_at` is not an RFC 3339 timestamp") as info:
        _verify(signer, _forge(signer, expires_at=spelling), max_lifetime=None)
    assert info.value.check == "decode"


def test_the_lifetime_is_capped_by_default_and_by_the_policy_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    signer = new_signer()
    forever = _forge(signer, expires_at="9999-12-31T23:59:59Z")
    with pytest.raises(ApprovalError, match=r"lifetime .* exceeds the policy's maximum of 30d"):
        _verify(signer, forever)
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x")
    spec = load_spec_file(spec_path)
    h = spec_hash(spec)
    write_key_set(tmp_path / "signing_keys.json", signer)
    ten_hours = signer.issue(h, "prod", ["http_post"], ttl=timedelta(hours=10))
    policy = tmp_path / "policy.json"

    def gate(cap: object) -> str:
        policy.write_text(json.dumps({"policy_version": 1, "postures": {"prod": {"approval_max_lifetime": cap}}}))
        g = gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False, approval=ten_hours,
                     key_set=None, policy_file=str(policy)) if cap != "refused" else None
        return g.decisions[0].decision if g else ""

    assert gate("30d") == "Allow"
    assert gate(None) == "Allow"  # null: no cap
    with pytest.raises(Exception, match="lifetime 10h exceeds the policy's maximum of 8h"):
        gate("8h")
    with pytest.raises(Exception, match=r"postures\.prod\.approval_max_lifetime must be seconds"):
        gate("soon")


def test_identity_fields_are_compared_with_the_configured_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = new_signer()
    cred = _forge(signer)  # org acme, project shop, environment prod-eu
    _verify(signer, cred)  # nothing configured: carried and shown, not compared
    monkeypatch.setenv("BYTEOR_ENVIRONMENT_ID", "prod-us")
    with pytest.raises(ApprovalError, match="credential is for environment_id 'prod-eu', this run is 'prod-us' "
                                            r"\(BYTEOR_ENVIRONMENT_ID\)") as info:
        _verify(signer, cred)
    assert info.value.check == "environment"
    monkeypatch.setenv("BYTEOR_ENVIRONMENT_ID", "prod-eu")
    monkeypatch.setenv("BYTEOR_ORG_ID", "other-org")
    with pytest.raises(ApprovalError, match="org_id 'acme', this run is 'other-org'"):
        _verify(signer, cred)
    monkeypatch.setenv("BYTEOR_ORG_ID", "acme")
    monkeypatch.setenv("BYTEOR_PROJECT_ID", "shop")
    _verify(signer, cred)


def _expiring_gate(tmp_path: Path, server: HttpTarget, seconds: int) -> tuple[Path, str]:
    spec_path = write_spec(tmp_path, f"http_post:{server.base}/hook")
    h = spec_hash(load_spec_file(spec_path))
    signer = new_signer("ops")
    write_key_set(tmp_path / "signing_keys.json", signer)
    return spec_path, signer.issue(h, "prod", ["http_post"], ttl=timedelta(seconds=seconds))


def test_side_effects_stop_when_the_approval_expires_during_a_run(tmp_path: Path) -> None:
    """The approval was checked only at startup: a POST an hour after expiry still went out."""
    server = start_server()
    try:
        spec_path, cred = _expiring_gate(tmp_path, server, 3)
        spec = load_spec_file(spec_path)
        events: list[dict[str, Any]] = []
        gate = gate_run(spec, spec_path=str(spec_path), spec_hash=spec_hash(spec), posture="prod", dry_run=False,
                        approval=cred, key_set=None, recorder=events.append)
        key = gate.decisions[0].key
        stage = resolve_action(key, gate.context)
        slot = memoryview(bytearray(b"before"))
        assert stage.fn(slot, 6) == 6 and len(server.recorder.posts()) == 1
        deadline = datetime.strptime(gate.context.extra["approval_expires_at"], "%Y-%m-%dT%H:%M:%SZ")
        time.sleep(max(0.0, deadline.replace(tzinfo=UTC).timestamp() - time.time()) + 0.2)
        after = memoryview(bytearray(b"after!"))
        assert stage.fn(after, 6) == 6  # forwarded, not performed
        assert len(server.recorder.posts()) == 1
        if stage.close is not None:
            stage.close()
    finally:
        server.stop()
    [rec] = DeadLetterJournal(str(tmp_path / "dead-letter"), create=False).records()
    assert rec.input == b"after!" and rec.decision == "RequireApproval" and "expired at" in rec.error
    assert [e["decision"] for e in events] == ["Allow", "RequireApproval"]


def test_a_live_multi_process_run_dead_letters_after_expiry(tmp_path: Path) -> None:
    """The same through `byteor-actiongraph run` with one process per stage and messages on stdin:
    one message before expiry is posted, one after it is dead-lettered, and the run still exits 0."""
    server = start_server()
    try:
        spec_path, cred = _expiring_gate(tmp_path, server, 4)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
        proc = subprocess.Popen([str(BIN / "byteor-actiongraph"), "run", str(spec_path), "--env=prod",
                                 f"--approval={cred}", "--input=-", "--wait=block"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        proc.stdin.write(b"first\n")
        proc.stdin.flush()
        until = time.monotonic() + 30
        while not server.recorder.posts() and time.monotonic() < until:
            time.sleep(0.05)
        assert len(server.recorder.posts()) == 1
        time.sleep(5)
        out, err = proc.communicate(b"second\n", timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == [b"first".hex(), b"second".hex()]  # forwarded either way
    assert [p.body for p in server.recorder.posts()] == [b"first"]
    assert "expired at" in err.decode() and "dead-letter journal" in err.decode()
    [rec] = DeadLetterJournal(str(tmp_path / "dead-letter"), create=False).records()
    assert rec.input == b"second" and rec.decision == "RequireApproval"


def test_stages_allowed_without_an_approval_never_expire(tmp_path: Path) -> None:
    ctx = StageContext(posture="dev", decisions={"http_post:http://127.0.0.1:9/x": "Allow"},
                       extra={"approval_expires_at": "2000-01-01T00:00:00Z", "approval_covers": "exec:/bin/true"})
    from byteor.actions._resolve import _approval_expiry

    assert _approval_expiry(ctx, "http_post:http://127.0.0.1:9/x") == ("", None)
    assert _approval_expiry(ctx, "exec:/bin/true")[0] == "2000-01-01T00:00:00Z"
