"""One redaction module for every log, artifact and error: the rules one by one, then the probe that
planted 22 secrets in the environment, a command line and stage keys (11 reached a bundle or an
audit) and checks that none is written or printed anywhere now."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from byteor._redact import (
    REDACTED,
    is_secret_name,
    mask_secrets,
    redact_argv,
    redact_env,
    redact_spec_text,
    redact_stage_key,
    redact_url,
    scrub,
    secret_values,
    url_credential_parts,
)
from byteor.actions import DeadLetterJournal
from policy_support import start_server

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("name", "secret"), [
    ("DB_PASS", True), ("MYSQL_PWD", True), ("SSHPASS", True), ("JWT", True), ("SLACK_WEBHOOK", True),
    ("GITHUB_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True), ("SESSION_COOKIE", True), ("PGPASSWORD", True),
    ("PWD", False), ("OLDPWD", False), ("PATH", False), ("HOME", False), ("LANG", False),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(("url", "shown"), [
    ("postgres://app:s3cr3t@db:5432/x", f"postgres://{REDACTED}@db:5432/x"),
    ("postgres://app:pa/ss@word@db/x", f"postgres://{REDACTED}@db/x"),
    ("https://tok@h/p", f"https://{REDACTED}@h/p"),
    ("https://h/x?token=abc&page=2", f"https://h/x?token={REDACTED}&page=2"),
    ("https://h/x?X-Amz-Signature=ab12&X-Amz-Credential=k%2F1", f"https://h/x?X-Amz-Signature={REDACTED}"
     f"&X-Amz-Credential={REDACTED}"),
    ("https://hooks.slack.com/services/T0/B0/XYZ", f"https://hooks.slack.com/services/{REDACTED}"),
    ("https://discord.com/api/webhooks/1/abc", f"https://discord.com/api/webhooks/{REDACTED}"),
    ("https://example.com/a@b", "https://example.com/a@b"),
    ("https://h/x?q=1", "https://h/x?q=1"),
    ("not a url", "not a url"),
])
def test_urls(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # idempotent


def test_argv_env_and_free_text() -> None:
    env = {"DB_PASS": "hunter2-db", "API_URL": "https://h/x?token=tok-123456", "SHORT_KEY": "ab", "PWD": "/srv"}
    assert dict(redact_env(env)) == {"DB_PASS": REDACTED, "API_URL": f"https://h/x?token={REDACTED}",
                                     "SHORT_KEY": REDACTED, "PWD": "/srv"}
    assert secret_values(env) == {"hunter2-db", "tok-123456"}  # "ab" is too short to mask by value
    assert redact_argv(["run", "--approval=abc.def", "--pass", "x1", "-p", "y2", "-pz3", "--key-file", "/k",
                        "copy=hunter2-db"], secret_values(env)) == [
        "run", f"--approval={REDACTED}", "--pass", REDACTED, "-p", REDACTED, f"-p{REDACTED}", "--key-file",
        REDACTED, f"copy={REDACTED}"]
    assert mask_secrets("login failed for hunter2-db at tok-123456", secret_values(env)) == \
        f"login failed for {REDACTED} at {REDACTED}"
    assert scrub("GET https://u:p@h/x failed", {}) == f"GET https://{REDACTED}@h/x failed"


def test_stage_keys_and_spec_text() -> None:
    assert url_credential_parts("https://h/x?token=abc") == ["query parameter `token`"]
    assert url_credential_parts("https://h/x?token={env:TOKEN}") == []
    assert redact_stage_key("http_post:https://h/x?sig=abc") == f"http_post:https://h/x?sig={REDACTED}"
    assert redact_stage_key("exec:/usr/bin/mysql|--password=pw1|-e|select 1") == \
        f"exec:/usr/bin/mysql|--password={REDACTED}|-e|select 1"
    text = "pipeline.name=x\npipeline.stages.0.resolver_key=http_post:https://u:pw@h/x\n"
    assert redact_spec_text(text) == f"pipeline.name=x\npipeline.stages.0.resolver_key=http_post:https://{REDACTED}@h/x\n"


PLANTED_ENV = {
    "DB_PASS": "dbpass-4f1a9",
    "MYSQL_PWD": "mysqlpwd-7c2e",
    "SSHPASS": "sshpass-91bd",
    "JWT": "eyJhbGciOiJIUzI1NiJ9.jwtpayload-0f0f.jwtsig",
    "SLACK_HOOK": "https://hooks.slack.com/services/T000/B000/slackpath-7777",
    "NOTIFY_URL": "https://api.example.com/v1/notify?token=querytoken-5a5a&x=1",
    "DATABASE_URL": "postgres://app:pw/with@sign-3e3e@db.internal:5432/app",
    "AWS_SECRET_ACCESS_KEY": "awssecret-0b0b",
    "GITHUB_TOKEN": "ghp_githubtoken-1c1c",
    "BYTEOR_AGENT_API_KEY": "agentkey-2d2d",
    "BYTEOR_API_BASE_URL": "https://agent:basepw-6e6e@127.0.0.1:1",
    "BYTEOR_AGENT_ID": "agent-1",
    "REDIS_URL": "redis://:redispw-8f8f@cache:6379/0",
    "STRIPE_SECRET": "sk_live_stripe-9a9a",
    "SESSION_COOKIE": "sessioncookie-abab",
}
PLANTED_ARGV = ["--approval=approvalcred-cdcd.sig-efef", "-p", "mysqlarg-1212", "--pass=passarg-3434",
                "-pMYSQLINLINE-5656", "--token", "tokenarg-7878", "https://user:urlpw-9090@host/x"]
PLANTED_KEYS = {"http_post:https://hooks.example.com/x?token=specquery-abcd": "specquery-abcd",
                "exec:/usr/bin/mysql|--password=specexecpw-ef01": "specexecpw-ef01"}
SECRETS = ["dbpass-4f1a9", "mysqlpwd-7c2e", "sshpass-91bd", "jwtpayload-0f0f", "slackpath-7777", "querytoken-5a5a",
           "pw/with@sign-3e3e", "with@sign-3e3e", "awssecret-0b0b", "ghp_githubtoken-1c1c", "agentkey-2d2d",
           "basepw-6e6e", "redispw-8f8f", "sk_live_stripe-9a9a", "sessioncookie-abab", "approvalcred-cdcd",
           "mysqlarg-1212", "passarg-3434", "MYSQLINLINE-5656", "tokenarg-7878", "urlpw-9090", "specquery-abcd",
           "specexecpw-ef01"]


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _all_text(*roots: Path) -> str:
    out = []
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        out += [p.read_bytes().decode("utf-8", errors="replace") for p in paths]
    return "\n".join(out)


def test_planted_secrets_reach_no_bundle_audit_record_or_message(tmp_path: Path) -> None:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    planted = {**base_env, **PLANTED_ENV}
    lines = ["pipeline.name=leaky", "pipeline.target=SingleRing", "pipeline.stages.0.id=start"]
    for i, key in enumerate(PLANTED_KEYS, start=1):
        lines += [f"pipeline.stages.{i}.id=act{i}", f"pipeline.stages.{i}.op=resolver",
                  f"pipeline.stages.{i}.resolver_key={key}", f"pipeline.stages.{i}.depends_on.0=0"]
    spec = tmp_path / "spec.kv"
    spec.write_text("\n".join(lines) + "\n")
    # a live process with the planted environment and command line, described by incident-bundle --pid
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *PLANTED_ARGV], env=planted)
    stderr = []
    try:
        time.sleep(0.2)
        bundle = tmp_path / "bundle"
        res = subprocess.run([str(BIN / "byteor"), "incident-bundle", str(spec), f"--out={bundle}",
                              f"--pid={victim.pid}"], capture_output=True, text=True, env=planted, timeout=60,
                             check=False)
        assert res.returncode == 0, res.stderr
        stderr.append(res.stderr)
    finally:
        victim.kill()
        victim.wait()
    # the same process's own invocation, redacted from its own argv
    res = subprocess.run([str(BIN / "byteor"), "incident-bundle", str(spec), f"--out={tmp_path / 'self'}"],
                         capture_output=True, text=True, env=planted, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    stderr.append(res.stderr)
    audit = tmp_path / "audit.json"
    res = subprocess.run([str(BIN / "byteor-actiongraph"), "policy-audit", str(spec), f"--out={audit}", "--env=prod"],
                         capture_output=True, text=True, env=planted, timeout=60, check=False)
    stderr.append(res.stderr)
    res = subprocess.run([str(BIN / "byteor"), "validate", str(spec)], capture_output=True, text=True, env=planted,
                         timeout=60, check=False)
    assert res.returncode == 3 and "carries a credential (query parameter `token`)" in res.stderr
    assert "exec arguments carry a credential (option --password)" in res.stderr
    stderr.append(res.stdout + res.stderr)
    env_json = (bundle / "environment.json").read_text()
    assert "DB_PASS" in env_json and "--approval=<redacted>" in env_json  # recorded, but hidden
    leaked = _leaks(_all_text(bundle, tmp_path / "self", audit) + "\n".join(stderr))
    assert leaked == []
    assert {p.stat().st_mode & 0o777 for p in [audit, *bundle.rglob("*")] if p.is_file()} == {0o600}


def test_a_secret_kept_in_the_environment_reaches_the_target_and_nothing_else(tmp_path: Path) -> None:
    """The alternative the docs show: {env:NAME} in the spec, the value in the environment."""
    server = start_server()
    server.recorder.statuses = [500] * 10
    try:
        spec = tmp_path / "spec.kv"
        spec.write_text("pipeline.name=hook\npipeline.target=SingleRing\npipeline.stages.0.id=start\n"
                        "pipeline.stages.1.id=post\npipeline.stages.1.op=resolver\npipeline.stages.1.depends_on.0=0\n"
                        f"pipeline.stages.1.resolver_key=http_post:{server.base}/hook?token={{env:HOOK_TOKEN}}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
        env.update({"HOOK_TOKEN": "live-token/with+chars", "BYTEOR_ACTION_MAX_RETRIES": "0"})
        res = subprocess.run([str(BIN / "byteor-actiongraph"), "run", str(spec), "--sp", "--input-ascii=hi"],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
        assert res.returncode == 1 and "HTTP 500" in res.stderr
        [post] = server.recorder.posts()
        assert post.path == "/hook?token=live-token%2Fwith%2Bchars"  # the target gets the secret, encoded
        missing = subprocess.run([str(BIN / "byteor-actiongraph"), "run", str(spec), "--sp", "--input-ascii=hi"],
                                 capture_output=True, text=True, timeout=60, check=False,
                                 env={k: v for k, v in env.items() if k != "HOOK_TOKEN"})
        assert missing.returncode == 2 and "names {env:HOOK_TOKEN}, but HOOK_TOKEN is not set" in missing.stderr
    finally:
        server.stop()
    records = DeadLetterJournal(str(tmp_path / "dead-letter"), create=False).records()
    assert [r.stage_key for r in records] == [f"http_post:{server.base}/hook?token={{env:HOOK_TOKEN}}"]
    written = _all_text(tmp_path / "dead-letter", *tmp_path.glob("policy_audit-*.json"))
    assert "live-token" not in written + res.stderr + res.stdout
    assert "{env:HOOK_TOKEN}" in written


def test_a_credential_given_where_a_file_was_expected_is_not_echoed(tmp_path: Path, cli) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text("pipeline.name=x\npipeline.target=SingleRing\npipeline.stages.0.id=a\n")
    standard = base64.b64encode(os.urandom(240)).decode() + "." + base64.b64encode(os.urandom(64)).decode()
    assert "/" in standard or "+" in standard
    res = cli("approval", "verify", str(spec), "--env=prod", f"--approval=/{standard}")
    assert res.returncode == 2 and standard[:20] not in res.stderr and "not shown" in res.stderr
    res = cli("approval", "verify", str(spec), "--env=prod", f"--approval={tmp_path / 'gone.cred'}")
    assert res.returncode == 2 and "gone.cred: approval credential file does not exist" in res.stderr
