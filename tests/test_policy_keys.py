"""Signing-key refresh from a real local control-plane server, the cache next to the spec, and the
logged fallback to that cache when the control plane is down (never logging the API key)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from byteor import PolicyRefused, load_spec_file, spec_hash
from byteor.policy import RefreshConfig, load_runtime_keys
from byteor.policy.gate import gate_run
from policy_support import new_signer, start_server, write_key_set, write_spec

API_KEY = "agent-api-key-do-not-log-7f3a"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BYTEOR_HTTP_POST_ALLOWLIST", "BYTEOR_POLICY_FILE", "BYTEOR_API_BASE_URL",
                 "BYTEOR_AGENT_ID", "BYTEOR_AGENT_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_refresh_then_cached_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture, cli) -> None:
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x")
    spec = load_spec_file(spec_path)
    h = spec_hash(spec)
    signer = new_signer("cp-1")
    server = start_server()
    server.recorder.keys_doc = {"keys": [signer.entry]}
    server.recorder.bearer = API_KEY
    env = {"BYTEOR_API_BASE_URL": server.base + "/", "BYTEOR_AGENT_ID": "agent-7",
           "BYTEOR_AGENT_API_KEY": API_KEY}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cred = signer.issue(h, "prod", ["http_post"])
    cache = tmp_path / "signing_keys.json"
    try:
        gate = gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                        approval=cred, key_set=None)
        assert gate.decisions[0].decision == "Allow"
        assert gate.approval is not None and gate.approval.key_source == "refreshed"
        [req] = server.recorder.requests
        assert (req.method, req.path) == ("GET", "/v1/agents/agent-7/signing-keys")
        assert req.headers["authorization"] == f"Bearer {API_KEY}"
        doc = json.loads(cache.read_text())
        assert doc["source"] == "refreshed" and doc["last_refresh_at"].endswith("Z")
        assert doc["keys"] == [signer.entry]
        assert API_KEY not in cache.read_text()
    finally:
        server.stop()

    # control plane down: the cache next to the spec is used and the fallback is logged
    caplog.set_level(logging.WARNING, logger="byteor.policy")
    gate = gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                    approval=cred, key_set=None)
    assert gate.decisions[0].decision == "Allow"
    assert gate.approval is not None and gate.approval.key_source == "cached"
    assert "signing-key refresh failed" in caplog.text and str(cache) in caplog.text
    assert API_KEY not in caplog.text
    res = cli("approval", "verify", str(spec_path), "--env=prod", f"--approval={cred}", env=env)
    assert res.returncode == 0, res.stderr
    assert "signing-key refresh failed" in res.stderr and "using the cached key set" in res.stderr
    assert API_KEY not in res.stderr + res.stdout


def test_refresh_rejected_falls_back_and_rotated_key_is_unknown(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x")
    spec = load_spec_file(spec_path)
    h = spec_hash(spec)
    old, new = new_signer("old"), new_signer("new")
    write_key_set(tmp_path / "signing_keys.json", old)
    server = start_server()
    server.recorder.keys_doc = [new.entry]
    server.recorder.bearer = "the-right-key"
    try:
        wrong = RefreshConfig(server.base, "a1", API_KEY)
        assert API_KEY not in repr(wrong)
        caplog.set_level(logging.WARNING, logger="byteor.policy")
        keys = load_runtime_keys(str(tmp_path), None, wrong)
        assert keys is not None and set(keys.keys) == {"old"} and keys.source == "file"
        assert "HTTP 401" in caplog.text and API_KEY not in caplog.text
        # with the right key the control plane's set replaces the local one: "old" was rotated out
        right = RefreshConfig(server.base, "a1", "the-right-key")
        keys = load_runtime_keys(str(tmp_path), None, right)
        assert keys is not None and set(keys.keys) == {"new"} and keys.source == "refreshed"
    finally:
        server.stop()
    with pytest.raises(PolicyRefused, match="signing key `old` is not in the trusted key set"):
        gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                 approval=old.issue(h, "prod", ["http_post"]), key_set=None)


def test_refresh_needs_all_three_variables() -> None:
    assert RefreshConfig.from_env({"BYTEOR_API_BASE_URL": "http://x", "BYTEOR_AGENT_ID": "a"}) is None
    cfg = RefreshConfig.from_env({"BYTEOR_API_BASE_URL": "http://x/", "BYTEOR_AGENT_ID": "a",
                                  "BYTEOR_AGENT_API_KEY": "k"})
    assert cfg is not None and cfg.url == "http://x/v1/agents/a/signing-keys"
