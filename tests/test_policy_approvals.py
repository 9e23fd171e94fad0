"""Approval credentials: the full rejection matrix through gate_run and `byteor approval verify`,
check order, key-set shapes and rotation, credential lookup, and the exact wire format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from byteor import ApprovalError, PolicyRefused, load_spec_file, spec_hash
from byteor._formats import b64url_decode
from byteor.policy import CHECKS, load_key_set, verify_credential
from byteor.policy.gate import gate_run
from policy_support import Signer, credential_fields, new_signer, rejection_matrix, sign_raw, write_key_set, write_spec

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, str, Signer, Path]:
    spec = write_spec(tmp_path, f"http_post:{URL}")
    signer = new_signer("k1")
    keys = write_key_set(tmp_path / "keys.json", signer)
    return spec, spec_hash(load_spec_file(spec)), signer, keys


def test_rejection_matrix_through_gate_run(setup: tuple[Path, str, Signer, Path], tmp_path: Path) -> None:
    spec_path, h, signer, keys = setup
    spec = load_spec_file(spec_path)
    for case, (cred, check) in rejection_matrix(h, signer, tmp_path).items():
        with pytest.raises(PolicyRefused) as info:
            gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="staging", dry_run=False,
                     approval=cred, key_set=str(keys))
        msg = str(info.value)
        assert info.value.exit_code == 4
        assert f"approval {check} check failed" in msg, (case, msg)
        assert "stage 1 'act1'" in msg and "RequireApproval" in msg, (case, msg)
        assert cred not in msg and cred.split(".")[0] not in msg, case


def test_rejection_matrix_through_cli(setup: tuple[Path, str, Signer, Path], tmp_path: Path, cli) -> None:
    spec_path, h, signer, keys = setup
    for case, (cred, check) in rejection_matrix(h, signer, tmp_path).items():
        res = cli("approval", "verify", f"--spec={spec_path}", "--env=staging", f"--approval={cred}",
                  f"--approval-key-set={keys}")
        assert res.returncode == 4, (case, res.stdout, res.stderr)
        assert f"approval {check} check failed" in res.stderr, (case, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert cred.split(".")[0] not in res.stderr + res.stdout, case
        assert "Traceback" not in res.stderr


def test_verified_approval_allows_and_cli_explains(setup: tuple[Path, str, Signer, Path], cli) -> None:
    spec_path, h, signer, keys = setup
    cred = signer.issue(h, "staging", ["http_post"], issued_by="alice")
    gate = gate_run(load_spec_file(spec_path), spec_path=str(spec_path), spec_hash=h, posture="staging",
                    dry_run=False, approval=cred, key_set=str(keys))
    assert [d.decision for d in gate.decisions] == ["Allow"]
    assert gate.context.decisions == {f"http_post:{URL}": "Allow"}
    assert gate.approval is not None and gate.approval.payload.issued_by == "alice"
    res = cli("approval", "verify", str(spec_path), "--env=staging", f"--approval={cred}",
              f"--approval-key-set={keys}", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is True and [c["result"] for c in out["checks"]] == ["ok"] * len(CHECKS)
    assert out["approval"]["issued_by"] == "alice"
    res = cli("approval", "verify", str(spec_path), "--env=staging", f"--approval={cred}",
              f"--approval-key-set={keys}")
    assert res.returncode == 0 and "verified" in res.stdout


def test_two_failures_report_the_earlier_check(setup: tuple[Path, str, Signer, Path], cli) -> None:
    spec_path, h, signer, keys = setup
    key_set = load_key_set(str(keys))
    old = datetime.now(UTC) - timedelta(days=2)
    # wrong posture AND expired -> environment (checked before expiry)
    both = signer.issue(h, "prod", ["http_post"], ttl=timedelta(hours=1), issued_at=old)
    with pytest.raises(ApprovalError) as info:
        verify_credential(both, keys=key_set, spec_hash=h, posture="staging", required=["http_post"])
    assert info.value.check == "environment"
    # other spec hash AND missing capability -> spec_hash
    other = signer.issue("sha256:" + "0" * 64, "staging", [])
    with pytest.raises(ApprovalError) as info:
        verify_credential(other, keys=key_set, spec_hash=h, posture="staging", required=["http_post"])
    assert info.value.check == "spec_hash"
    # unknown kid AND wrong version -> signature
    stranger = sign_raw(new_signer("k7"), {**credential_fields(signer.issue(h, "staging", ["http_post"])),
                                            "kid": "k7", "v": 3})
    with pytest.raises(ApprovalError) as info:
        verify_credential(stranger, keys=key_set, spec_hash=h, posture="staging", required=["http_post"])
    assert info.value.check == "signature"
    res = cli("approval", "verify", str(spec_path), "--env=staging", f"--approval={both}",
              f"--approval-key-set={keys}", "--json")
    assert res.returncode == 4
    checks = {c["check"]: c["result"] for c in json.loads(res.stdout)["checks"]}
    assert checks["spec_hash"] == "ok" and checks["environment"] == "failed"
    assert checks["expiry"] == "not reached"


def test_key_set_shapes_and_rotation(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, f"http_post:{URL}")
    h = spec_hash(load_spec_file(spec_path))
    old, new = new_signer("2026-old"), new_signer("2026-new")
    for shape in ("list", "object", "cache"):
        ks = load_key_set(str(write_key_set(tmp_path / f"{shape}.json", old, new, shape=shape)))
        assert set(ks.keys) == {"2026-old", "2026-new"}
        for signer in (old, new):  # both keys active at once: rotation without invalidation
            cred = signer.issue(h, "prod", ["http_post"])
            assert verify_credential(cred, keys=ks, spec_hash=h, posture="prod", required=["http_post"])
    retired = load_key_set(str(write_key_set(tmp_path / "retired.json", new)))
    with pytest.raises(ApprovalError) as info:
        verify_credential(old.issue(h, "prod", ["http_post"]), keys=retired, spec_hash=h, posture="prod",
                          required=["http_post"])
    assert info.value.check == "signature" and "2026-old" in str(info.value)


def test_bad_key_set_is_a_usage_error(tmp_path: Path, cli) -> None:
    spec_path = write_spec(tmp_path, f"http_post:{URL}")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"keys": [{"kid": "a", "alg": "rsa", "public_key": "AAAA"}]}))
    cred = new_signer("a").issue(spec_hash(load_spec_file(spec_path)), "staging", ["http_post"])
    res = cli("approval", "verify", str(spec_path), "--env=staging", f"--approval={cred}",
              f"--approval-key-set={bad}")
    assert res.returncode == 2 and "keys[0].alg" in res.stderr and str(bad) in res.stderr


def test_credential_file_and_bundle_adjacent_defaults(setup: tuple[Path, str, Signer, Path], cli) -> None:
    spec_path, h, signer, _ = setup
    cred = signer.issue(h, "staging", ["http_post"])
    (spec_path.parent / "approval.cred").write_text("\n  " + cred + "\n")
    write_key_set(spec_path.parent / "signing_keys.json", signer)
    gate = gate_run(load_spec_file(spec_path), spec_path=str(spec_path), spec_hash=h, posture="staging",
                    dry_run=False, approval=None, key_set=None)
    assert gate.decisions[0].decision == "Allow"
    assert gate.approval_origin == str(spec_path.parent / "approval.cred")
    explicit = spec_path.parent / "explicit.cred"
    explicit.write_text(cred + "\n")
    res = cli("approval", "verify", str(spec_path), "--env=staging", f"--approval={explicit}")
    assert res.returncode == 0, res.stderr
    (spec_path.parent / "approval.cred").unlink()
    res = cli("approval", "verify", str(spec_path), "--env=staging")
    assert res.returncode == 4 and "no approval credential" in res.stderr


def test_missing_key_set_fails_the_signature_check(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, f"http_post:{URL}")
    h = spec_hash(load_spec_file(spec_path))
    with pytest.raises(PolicyRefused, match="approval signature check failed: no trusted signing keys"):
        gate_run(load_spec_file(spec_path), spec_path=str(spec_path), spec_hash=h, posture="prod",
                 dry_run=False, approval=new_signer().issue(h, "prod", ["http_post"]), key_set=None)


def test_wire_format_is_exact(setup: tuple[Path, str, Signer, Path]) -> None:
    _, h, signer, _ = setup
    cred = signer.issue(h, "staging", ["http_post", "exec"], org_id="o", project_id="p", environment_id="e",
                        issued_by="bob", approval_id="ap-1",
                        issued_at=datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC), ttl=timedelta(hours=2))
    payload_part, sig_part = cred.split(".")
    assert "=" not in cred and "+" not in cred and "/" not in cred
    payload = b64url_decode(payload_part)
    expected = {"approval_id": "ap-1", "capabilities": ["exec", "http_post"], "environment_id": "e",
                "environment_posture": "staging", "expires_at": "2026-11-23T12:00:00Z",
                "issued_at": "2026-11-23T10:00:00Z", "issued_by": "bob", "kid": "k1", "org_id": "o",
                "project_id": "p", "spec_hash": h, "v": 1}
    assert payload == json.dumps(expected, sort_keys=True, separators=(",", ":")).encode()
    signer.key.public_key().verify(b64url_decode(sig_part), payload)  # Ed25519 over the payload bytes


def test_required_capabilities_include_replay_execute(tmp_path: Path) -> None:
    from byteor.policy import required_capabilities

    spec = load_spec_file(write_spec(tmp_path, f"http_post:{URL}", "exec:/bin/true"))
    assert required_capabilities(spec) == ("exec", "http_post")
    assert required_capabilities(spec, replay_execute=True) == ("exec", "http_post", "replay_execute")
