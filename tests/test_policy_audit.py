"""Policy audit record JSON v1: every field, round trip, invalid specs, newer versions,
and the `byteor-actiongraph policy` / `policy-audit` verbs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from byteor import ArtifactError
from byteor._version import distribution_version
from byteor.policy.audit import policy_audit_record, read_policy_audit, write_policy_audit
from byteor.spec.summary import spec_summary
from policy_support import new_signer, write_key_set, write_spec

SEED_FIELDS = {"ok", "policy_version", "mode", "enforced", "stage_failure_policy", "spec_path", "lane_path",
               "wait", "runtime_crate"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BYTEOR_HTTP_POST_ALLOWLIST", "BYTEOR_EXEC_ALLOWLIST", "BYTEOR_POLICY_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_record_has_every_seed_field_and_round_trips(tmp_path: Path) -> None:
    from byteor import load_spec_file

    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x")
    rec = policy_audit_record(str(spec_path), mode="staging", enforced=True, lane_path="/dev/shm/byteor/x",
                              wait="spin")
    assert set(rec) >= SEED_FIELDS and "error" not in rec
    assert rec["ok"] is True and rec["policy_version"] == 1 and rec["mode"] == "staging"
    assert rec["enforced"] is True and rec["stage_failure_policy"] == "stop_pipeline"
    assert (rec["spec_path"], rec["lane_path"], rec["wait"]) == (str(spec_path), "/dev/shm/byteor/x", "spin")
    assert rec["runtime_crate"] == {"name": "byteor", "version": distribution_version()}
    assert rec["spec"] == spec_summary(load_spec_file(spec_path))
    out = tmp_path / "out" / "policy_audit.json"
    write_policy_audit(str(out), rec)
    assert read_policy_audit(str(out)) == rec


def test_undecodable_and_invalid_specs_still_give_a_record(tmp_path: Path) -> None:
    broken = tmp_path / "broken.kv"
    broken.write_text("pipeline.name=x\npipeline.target=SingleRing\npipeline.bogus=1\n")
    rec = policy_audit_record(str(broken), mode="prod", enforced=False)
    assert rec["ok"] is False and "spec" not in rec and "pipeline.bogus" in rec["error"]
    assert rec["lane_path"] is None and rec["wait"] is None
    invalid = tmp_path / "invalid.kv"
    invalid.write_text("pipeline.name=x\npipeline.target=SingleRing\n")  # no stages
    rec = policy_audit_record(str(invalid), mode="prod", enforced=False)
    assert rec["ok"] is False and isinstance(rec["spec"], dict) and rec["error"]
    missing = policy_audit_record(str(tmp_path / "none.kv"), mode="dev", enforced=False)
    assert missing["ok"] is False and "none.kv" in missing["error"]
    for r in (rec, missing):
        write_policy_audit(str(tmp_path / "r.json"), r)
        assert read_policy_audit(str(tmp_path / "r.json")) == r


@pytest.mark.parametrize(("change", "needle"), [
    ({"policy_version": 2}, "newer"),
    ({"enforced": "yes"}, "`enforced`"),
    ({"runtime_crate": {"name": "byteor"}}, "runtime_crate"),
    ({"ok": None}, "`ok`"),
])
def test_reader_rejects_bad_records(tmp_path: Path, change: dict[str, object], needle: str) -> None:
    rec = policy_audit_record(str(write_spec(tmp_path)), mode="dev", enforced=False)
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**rec, **change}))
    with pytest.raises(ArtifactError, match=needle):
        read_policy_audit(str(path))
    dropped = dict(rec)
    del dropped["wait"]
    path.write_text(json.dumps(dropped))
    with pytest.raises(ArtifactError, match="`wait` is missing"):
        read_policy_audit(str(path))


def test_policy_audit_verb(tmp_path: Path, cli) -> None:
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x", "exec:/bin/true")
    out = tmp_path / "audit.json"
    res = cli("policy-audit", f"--spec={spec_path}", "--env=staging", f"--out={out}",
              script="byteor-actiongraph")
    assert res.returncode == 0, res.stderr
    rec = read_policy_audit(str(out))
    assert rec["ok"] is True and rec["mode"] == "staging" and rec["enforced"] is False
    assert [(d["stage"], d["decision"]) for d in rec["decisions"]] == [("act1", "RequireApproval"),
                                                                        ("act2", "Deny")]
    broken = tmp_path / "broken.kv"
    broken.write_bytes(b"\xff\xfe")
    res = cli("policy-audit", str(broken), f"--out={out}", script="byteor-actiongraph")
    assert res.returncode == 0, res.stderr
    rec = read_policy_audit(str(out))
    assert rec["ok"] is False and "UTF-8" in rec["error"]


def test_policy_verb_prints_the_effective_table(tmp_path: Path, cli) -> None:
    spec_path = write_spec(tmp_path, "http_post:http://127.0.0.1:9/x", "exec:/bin/true")
    res = cli("policy", f"--spec={spec_path}", "--env=prod", "--json", script="byteor-actiongraph")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["posture"] == "prod" and doc["policy_source"] == "default"
    assert doc["rules"]["side_effects"] == "require_approval"
    assert {p: r["side_effects"] for p, r in doc["table"].items()} == {
        "dev": "allow", "staging": "require_approval", "prod": "require_approval"}
    assert [d["decision"] for d in doc["decisions"]] == ["RequireApproval", "Deny"]
    env = {"BYTEOR_EXEC_ALLOWLIST": "/bin/true"}
    res = cli("policy", str(spec_path), "--env=prod", "--dry-run", script="byteor-actiongraph", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("DryRunOnly") == 2 and "posture prod" in res.stdout
    signer = new_signer()
    keys = write_key_set(tmp_path / "keys.json", signer)
    h = cli("approval", "hash", str(spec_path)).stdout.strip()
    cred = signer.issue(h, "prod", ["http_post", "exec"])
    res = cli("policy", str(spec_path), "--env=prod", f"--approval={cred}", f"--approval-key-set={keys}",
              script="byteor-actiongraph", env=env)
    assert res.returncode == 0 and res.stdout.count("Allow") >= 2 and "verified" in res.stdout
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"policy_version": 1, "postures": {"prod": {"families": {"exec": "deny"}}}}))
    res = cli("policy", str(spec_path), "--env=prod", "--json", f"--policy-file={pf}",
              script="byteor-actiongraph", env=env)
    doc = json.loads(res.stdout)
    assert doc["policy_source"] == str(pf) and doc["decisions"][1]["decision"] == "Deny"
    res = cli("policy", str(tmp_path / "missing.kv"), script="byteor-actiongraph")
    assert res.returncode == 2 and "missing.kv" in res.stderr
