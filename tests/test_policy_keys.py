"""Signing-key refresh from a real local control-plane server: https (or loopback http when the
operator says so), a set signed by a root key pinned locally, the cache next to the spec, the logged
fallback to that cache, and an explicit --approval-key-set that nothing overrides."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from byteor import PolicyRefused, load_spec_file, spec_hash
from byteor.policy import RefreshConfig, load_runtime_keys
from byteor.policy.gate import gate_run
from byteor.policy.keys import refresh_refusal
from policy_support import (
    new_signer,
    refresh_env,
    signed_key_set,
    start_server,
    tls_files,
    write_key_set,
    write_spec,
)

API_KEY = "agent-api-key-do-not-log-7f3a"
REFRESH_VARS = ("BYTEOR_API_BASE_URL", "BYTEOR_AGENT_ID", "BYTEOR_AGENT_API_KEY", "BYTEOR_APPROVAL_ROOT_KEYS",
                "BYTEOR_API_ALLOW_INSECURE_LOOPBACK", "BYTEOR_API_CA_FILE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BYTEOR_HTTP_POST_ALLOWLIST", "BYTEOR_POLICY_FILE", *REFRESH_VARS):
        monkeypatch.delenv(name, raising=False)


def test_refresh_then_cached_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture, cli) -> None:
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x")
    spec = load_spec_file(spec_path)
    h = spec_hash(spec)
    root, signer = new_signer("root-1"), new_signer("cp-1")
    root_file = write_key_set(tmp_path / "root_keys.json", root)
    server = start_server()
    server.recorder.keys_doc = signed_key_set(root, signer)
    server.recorder.bearer = API_KEY
    env = refresh_env(server, root_file, API_KEY)
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
        assert cache.stat().st_mode & 0o777 == 0o600
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


def test_refresh_rejected_falls_back_and_rotated_key_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x")
    spec = load_spec_file(spec_path)
    h = spec_hash(spec)
    root, old, new = new_signer("root"), new_signer("old"), new_signer("new")
    write_key_set(tmp_path / "signing_keys.json", old)
    server = start_server()
    server.recorder.keys_doc = signed_key_set(root, new)
    server.recorder.bearer = "the-right-key"
    for name, value in refresh_env(server, write_key_set(tmp_path / "roots.json", root), API_KEY).items():
        monkeypatch.setenv(name, value)
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
    monkeypatch.delenv("BYTEOR_API_BASE_URL")
    with pytest.raises(PolicyRefused, match="signing key `old` is not in the trusted key set"):
        gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                 approval=old.issue(h, "prod", ["http_post"]), key_set=None)


def test_refresh_needs_all_three_variables() -> None:
    assert RefreshConfig.from_env({"BYTEOR_API_BASE_URL": "http://x", "BYTEOR_AGENT_ID": "a"}) is None
    cfg = RefreshConfig.from_env({"BYTEOR_API_BASE_URL": "http://x/", "BYTEOR_AGENT_ID": "a",
                                  "BYTEOR_AGENT_API_KEY": "k"})
    assert cfg is not None and cfg.url == "http://x/v1/agents/a/signing-keys"


def test_a_network_attacker_cannot_mint_approvals(tmp_path: Path, cli) -> None:
    """The probe: BYTEOR_API_BASE_URL=http://…, a fake control plane answering with its own key, a
    credential signed by that key, `--env=prod` with an explicit --approval-key-set. The credential
    passed, one POST went out and the agent key crossed the wire in clear. Now: no request at all,
    the run is refused, nothing is posted."""
    fake, legit = new_signer("attacker"), new_signer("ops-1")
    server = start_server()
    server.recorder.keys_doc = {"keys": [fake.entry]}
    try:
        spec_path = write_spec(tmp_path, f"http_post:{server.base}/hook")
        h = spec_hash(load_spec_file(spec_path))
        key_set = write_key_set(tmp_path / "trusted.json", legit)
        cred = fake.issue(h, "prod", ["http_post"])
        attack = {"BYTEOR_API_BASE_URL": server.base, "BYTEOR_AGENT_ID": "a", "BYTEOR_AGENT_API_KEY": API_KEY}
        for extra in ([f"--approval-key-set={key_set}"], []):
            if not extra:
                write_key_set(tmp_path / "signing_keys.json", legit)
            res = cli("run", str(spec_path), "--sp", "--input-ascii=x", "--env=prod", f"--approval={cred}", *extra,
                      script="byteor-actiongraph", env=attack)
            assert res.returncode == 4, res.stderr
            assert "approval signature check failed: signing key `attacker` is not in the trusted key set" \
                in res.stderr
            assert API_KEY not in res.stderr + res.stdout
        # even an attacker who signs with a root key of their own gets nowhere: the root is pinned here
        server.recorder.keys_doc = signed_key_set(new_signer("root"), fake)
        env = refresh_env(server, write_key_set(tmp_path / "roots.json", new_signer("pinned-root")), API_KEY)
        res = cli("run", str(spec_path), "--sp", "--input-ascii=x", "--env=prod", f"--approval={cred}",
                  script="byteor-actiongraph", env=env)
        assert res.returncode == 4, res.stderr
        assert "which is not a pinned root key" in res.stderr
    finally:
        server.stop()
    gets = [r for r in server.recorder.requests if r.method == "GET"]
    assert len(gets) == 1  # only the last run, which was configured for loopback http on purpose
    assert server.recorder.posts() == []


@pytest.mark.parametrize(("base", "extra", "why"), [
    ("http://127.0.0.1:1", {}, "must be https://"),
    ("http://10.1.2.3:8080", {"BYTEOR_API_ALLOW_INSECURE_LOOPBACK": "1"}, "must be https://"),
    ("ftp://127.0.0.1", {}, "must be https://"),
    ("https://cp.example", {"BYTEOR_APPROVAL_ROOT_KEYS": ""}, "no root key is pinned"),
    ("https://agent:pw@cp.example", {}, "must not carry credentials"),
])
def test_refresh_is_refused_unless_configured_safely(base: str, extra: dict[str, str], why: str) -> None:
    env = {"BYTEOR_APPROVAL_ROOT_KEYS": "/roots.json", **extra}
    got = refresh_refusal(RefreshConfig(base, "a", API_KEY), env)
    assert got is not None and why in got
    assert refresh_refusal(RefreshConfig("https://cp.example", "a", API_KEY), {"BYTEOR_APPROVAL_ROOT_KEYS": "/r"}) \
        is None


def test_an_unsigned_badly_signed_or_expired_set_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    root, other, signer = new_signer("root"), new_signer("other"), new_signer("cp")
    server = start_server()
    for name, value in refresh_env(server, write_key_set(tmp_path / "roots.json", root), API_KEY).items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.WARNING, logger="byteor.policy")
    tampered = signed_key_set(root, signer)
    tampered["keys"] = [other.entry]
    cases = [
        ({"keys": [signer.entry]}, "is not signed"),
        (signed_key_set(other, signer), "`other`, which is not a pinned root key"),
        (tampered, "does not verify under `root`"),
        (signed_key_set(root, signer, ttl=timedelta(seconds=-5)), "the signed key set expired at"),
    ]
    try:
        for doc, why in cases:
            server.recorder.keys_doc = doc
            caplog.clear()
            assert load_runtime_keys(str(tmp_path), None) is None  # refused, and no local cache to fall back on
            assert why in caplog.text, caplog.text
        server.recorder.keys_doc = signed_key_set(root, signer)
        keys = load_runtime_keys(str(tmp_path), None)
        assert keys is not None and set(keys.keys) == {"cp"}
    finally:
        server.stop()


def test_https_refresh_verifies_the_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    ca_pem, tls = tls_files(tmp_path)
    root, signer = new_signer("root"), new_signer("cp")
    server = start_server(tls)
    server.recorder.keys_doc = signed_key_set(root, signer)
    env = refresh_env(server, write_key_set(tmp_path / "roots.json", root), API_KEY)
    assert "BYTEOR_API_ALLOW_INSECURE_LOOPBACK" not in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.WARNING, logger="byteor.policy")
    try:
        assert load_runtime_keys(str(tmp_path), None) is None  # a CA nobody trusts: the TLS handshake fails
        assert "ConnectError" in caplog.text and server.recorder.requests == []
        monkeypatch.setenv("BYTEOR_API_CA_FILE", str(ca_pem))
        keys = load_runtime_keys(str(tmp_path), None)
        assert keys is not None and set(keys.keys) == {"cp"} and keys.source == "refreshed"
        assert len(server.recorder.requests) == 1
    finally:
        server.stop()


def test_a_password_in_the_base_url_is_never_printed(tmp_path: Path, cli) -> None:
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x")
    h = spec_hash(load_spec_file(spec_path))
    signer = new_signer("k")
    write_key_set(tmp_path / "signing_keys.json", signer)
    env = {"BYTEOR_API_BASE_URL": "https://agent:hunter2-base-url-pw@127.0.0.1:1", "BYTEOR_AGENT_ID": "a",
           "BYTEOR_AGENT_API_KEY": API_KEY, "BYTEOR_APPROVAL_ROOT_KEYS": str(tmp_path / "signing_keys.json")}
    cred = signer.issue(h, "prod", ["http_post"])
    res = cli("approval", "verify", str(spec_path), "--env=prod", f"--approval={cred}", env=env)
    assert res.returncode == 0, res.stderr
    assert "signing-key refresh failed" in res.stderr
    assert "hunter2-base-url-pw" not in res.stderr + res.stdout and API_KEY not in res.stderr + res.stdout
