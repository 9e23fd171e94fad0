"""The issuing-side tooling end to end through the real console scripts: keygen, issue, verify, hash."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from byteor.policy import decode_credential
from policy_support import write_spec


def test_keygen_issue_verify_round_trip(tmp_path: Path, cli) -> None:
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x", "exec:/bin/true")
    keys_dir = tmp_path / "keys"
    key_set = tmp_path / "signing_keys.json"
    res = cli("approval", "keygen", f"--out={keys_dir}", "--kid=ops-2026", f"--key-set={key_set}", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    pem = keys_dir / "ops-2026.pem"
    assert info["kid"] == "ops-2026" and info["private_key"] == str(pem)
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    entry = json.loads((keys_dir / "ops-2026.pub.json").read_text())
    assert entry["alg"] == "ed25519" and entry["kid"] == "ops-2026"
    assert json.loads(key_set.read_text()) == {"keys": [entry]}
    assert "PRIVATE KEY" not in res.stdout

    # a second key (rotation) is appended to the same set
    res = cli("approval", "keygen", f"--out={keys_dir}", "--kid=ops-2027", f"--key-set={key_set}")
    assert res.returncode == 0 and "now 2 keys" in res.stdout
    assert [k["kid"] for k in json.loads(key_set.read_text())["keys"]] == ["ops-2026", "ops-2027"]

    res = cli("approval", "issue", f"--key={pem}", f"--spec={spec_path}", "--env=prod", "--ttl=2h",
              "--issued-by=carol", "--approval-id=chg-1")
    assert res.returncode == 0, res.stderr
    cred = res.stdout.strip()
    payload = decode_credential(cred)
    h = cli("approval", "hash", str(spec_path)).stdout.strip()
    assert (payload.kid, payload.spec_hash, payload.environment_posture) == ("ops-2026", h, "prod")
    assert payload.capabilities == ("exec", "http_post")  # default: what the spec needs
    assert (payload.issued_by, payload.approval_id, payload.environment_id) == ("carol", "chg-1", "prod")

    (tmp_path / "approval.cred").write_text(cred + "\n")
    res = cli("approval", "verify", str(spec_path), "--env=prod")  # both files found next to the spec
    assert res.returncode == 0, res.stderr
    assert "verified" in res.stdout and "chg-1" in res.stdout
    res = cli("approval", "verify", str(spec_path), "--env=staging")
    assert res.returncode == 4 and "approval environment check failed" in res.stderr

    # a credential for fewer capabilities than the spec needs is refused at the last check
    res = cli("approval", "issue", f"--key={pem}", str(spec_path), "--env=prod", "--capabilities=http_post",
              f"--out={tmp_path / 'narrow.cred'}")
    assert res.returncode == 0
    assert stat.S_IMODE((tmp_path / "narrow.cred").stat().st_mode) == 0o600
    res = cli("approval", "verify", str(spec_path), "--env=prod", f"--approval={tmp_path / 'narrow.cred'}")
    assert res.returncode == 4 and "approval capabilities check failed" in res.stderr and "exec" in res.stderr


def test_tooling_bad_input(tmp_path: Path, cli) -> None:
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x")
    keys_dir = tmp_path / "k"
    assert cli("approval", "keygen", f"--out={keys_dir}", "--kid=a").returncode == 0
    res = cli("approval", "keygen", f"--out={keys_dir}", "--kid=a")
    assert res.returncode == 2 and "already exists" in res.stderr
    res = cli("approval", "keygen", f"--out={keys_dir}", "--kid=../escape")
    assert res.returncode == 2 and "--kid" in res.stderr
    pem = keys_dir / "a.pem"
    cases = [
        (["--ttl=0"], "--ttl"),
        (["--ttl=5y"], "--ttl"),
        (["--capabilities=http_post,teleport"], "teleport"),
    ]
    for extra, needle in cases:
        res = cli("approval", "issue", f"--key={pem}", str(spec_path), "--env=prod", *extra)
        assert res.returncode == 2 and needle in res.stderr, (extra, res.stderr)
    res = cli("approval", "issue", f"--key={tmp_path / 'nope.pem'}", str(spec_path), "--env=prod")
    assert res.returncode == 2 and "does not exist" in res.stderr
    (tmp_path / "garbage.pem").write_text("not a key")
    res = cli("approval", "issue", f"--key={tmp_path / 'garbage.pem'}", str(spec_path), "--env=prod")
    assert res.returncode == 2 and "PEM" in res.stderr
    res = cli("approval", "issue", f"--key={pem}", str(tmp_path / "missing.kv"), "--env=prod")
    assert res.returncode == 2
    res = cli("approval", "verify", str(spec_path), "--env=prod", "--approval=garbage")
    assert res.returncode == 4 and "approval decode check failed" in res.stderr
    assert "garbage" not in res.stderr
    res = cli("approval", "verify", str(spec_path), "--env=prod", f"--approval={tmp_path / 'gone.cred'}")
    assert res.returncode == 2 and "gone.cred: approval credential file does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_hash_prints_the_spec_hash_alone(tmp_path: Path, cli) -> None:
    from byteor import load_spec_file, spec_hash

    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x")
    res = cli("approval", "hash", str(spec_path))
    assert res.returncode == 0 and res.stdout == spec_hash(load_spec_file(spec_path)) + "\n"
