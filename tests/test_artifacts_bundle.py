"""``incident-bundle`` through the real CLI: required files, secrets, invalid specs, no overwrite."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from byteor import ArtifactError
from byteor.artifacts import MANIFEST, REQUIRED_FILES, extract_bundle_tar, read_incident_bundle
from byteor.spec.kv import canonical_bytes, decode_kv

Cli = Callable[..., subprocess.CompletedProcess[str]]

GOOD = (
    "# a comment\n"
    "pipeline.name=example\npipeline.target=SingleRing\npipeline.stages.0.id=stage-a\n"
    "pipeline.stages.1.id=stage-b\npipeline.constraints.shards=1\n"
)

SECRETS = {
    "FOO_TOKEN": "tok-0a1b2c3d4e",
    "DB_PASSWORD": "pw-5f6a7b8c9d",
    "AWS_SECRET_ACCESS_KEY": "aws-e0f1a2b3c4",
    "DATABASE_URL": "postgres://dbuser:url-d5e6f7a8b9@db.internal:5432/app",
    "MY_SESSION": "sess-1c2d3e4f5a",
    "GH_CREDENTIALS": "cred-6b7c8d9e0f",
    "PLAIN_LOOKING": "amqp://guest:amqp-9a8b7c6d5e@127.0.0.1/",
}
SECRET_VALUES = [
    "tok-0a1b2c3d4e",
    "pw-5f6a7b8c9d",
    "aws-e0f1a2b3c4",
    "url-d5e6f7a8b9",
    "sess-1c2d3e4f5a",
    "cred-6b7c8d9e0f",
    "amqp-9a8b7c6d5e",
]


@pytest.fixture
def good_spec(tmp_path: Path) -> Path:
    p = tmp_path / "spec.kv"
    p.write_text(GOOD)
    return p


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_bundle_has_required_files_and_no_secret(cli: Cli, tmp_path: Path, good_spec: Path) -> None:
    out = tmp_path / "bundle"
    env = dict(SECRETS, BYTEOR_ENV="staging")
    res = cli("incident-bundle", f"--spec={good_spec}", f"--out={out}", "--api-key=argsecret-77", env=env)
    # --api-key is not an option of the verb: argparse refuses it (exit 2) before anything is written.
    assert res.returncode == 2 and not out.exists()
    res = cli("incident-bundle", f"--spec={good_spec}", f"--out={out}", env=env)
    assert res.returncode == 0, res.stderr
    for name in (*REQUIRED_FILES, MANIFEST):
        assert (out / name).is_file(), name
    blob = _all_bytes(out)
    for value in SECRET_VALUES:
        assert value.encode() not in blob, value
    bundle = read_incident_bundle(out)
    env_map = dict(bundle.environment.env)
    assert env_map["FOO_TOKEN"] == "<redacted>" and env_map["AWS_SECRET_ACCESS_KEY"] == "<redacted>"
    assert env_map["DATABASE_URL"] == "postgres://<redacted>@db.internal:5432/app"
    assert env_map["BYTEOR_ENV"] == "staging"
    assert bundle.spec_kv == canonical_bytes(decode_kv(GOOD))
    assert bundle.runtime.name == "byteor"
    assert bundle.policy_audit["ok"] is True and bundle.policy_audit["mode"] == "staging"
    assert bundle.manifest is not None and "runtime_config.txt" in bundle.manifest["absent"]


def test_bundle_from_undecodable_spec_keeps_raw_bytes(cli: Cli, tmp_path: Path) -> None:
    raw = b"pipeline.name=x\npipeline.target=SingleRing\nnot a kv line\n\xff\n"
    spec = tmp_path / "bad.kv"
    spec.write_bytes(raw)
    out = tmp_path / "b"
    res = cli("incident-bundle", str(spec), f"--out={out}")
    assert res.returncode == 0, res.stderr
    assert (out / "spec.kv").read_bytes() == raw
    val = json.loads((out / "spec_validation.json").read_text())
    assert val["ok"] is False and "line 4: invalid UTF-8" in val["error"]
    audit = json.loads((out / "policy_audit.json").read_text())
    assert audit["ok"] is False and audit["error"]
    assert read_incident_bundle(out).spec_validation.ok is False


def test_bundle_from_decodable_but_invalid_spec(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "invalid.kv"
    spec.write_text(
        "pipeline.name=x\npipeline.target=SingleRing\npipeline.constraints.producer=mpmc\n"
        "pipeline.stages.0.id=a\n"
    )
    out = tmp_path / "b"
    res = cli("incident-bundle", f"--spec={spec}", f"--out={out}", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["spec_ok"] is False and summary["spec_sha256"].startswith("sha256:")
    val = json.loads((out / "spec_validation.json").read_text())
    assert val["ok"] is False
    assert (out / "spec.kv").read_bytes() == canonical_bytes(decode_kv(spec.read_bytes()))


def test_bundle_refuses_non_empty_out_and_missing_spec(cli: Cli, tmp_path: Path, good_spec: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = cli("incident-bundle", f"--spec={good_spec}", f"--out={out}")
    assert res.returncode == 2
    assert "not empty" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    res = cli("incident-bundle", f"--spec={tmp_path / 'nope.kv'}", f"--out={tmp_path / 'x'}")
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = cli(
        "incident-bundle", f"--spec={good_spec}", f"--out={tmp_path / 'y'}", "--config=/nonexistent.txt"
    )
    assert res.returncode == 2 and "/nonexistent.txt" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("incident-bundle", f"--spec={good_spec}", f"--out={empty}").returncode == 0


def test_bundle_tar_and_config(cli: Cli, tmp_path: Path, good_spec: Path) -> None:
    config = tmp_path / "runtime_config.txt"
    config.write_text("runtime.tuning=low-latency\nruntime.wait=backoff\n")
    out = tmp_path / "case-42"
    res = cli("incident-bundle", f"--spec={good_spec}", f"--out={out}", "--tar", f"--config={config}")
    assert res.returncode == 0, res.stderr
    tar_path = tmp_path / "case-42.tar.gz"
    assert tar_path.is_file() and not out.exists()
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
    assert "case-42/spec.kv" in names and "case-42/runtime_config.txt" in names
    bundle = read_incident_bundle(extract_bundle_tar(tar_path, tmp_path / "x"))
    assert bundle.runtime_config == config.read_text()
    assert bundle.policy_audit["wait"] == "backoff"
    again = cli("incident-bundle", f"--spec={good_spec}", f"--out={out}", "--tar")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_bundle_copies_explicit_journal_and_detects_tampering(
    cli: Cli, tmp_path: Path, good_spec: Path
) -> None:
    jdir = tmp_path / "jr"
    jdir.mkdir()
    (jdir / "seg-0.journal").write_bytes(b"\x00" * 64)
    (jdir / "writer.lock").write_bytes(b"")
    out = tmp_path / "b"
    res = cli("incident-bundle", f"--spec={good_spec}", f"--out={out}", f"--journal=events={jdir}")
    assert res.returncode == 0, res.stderr
    bundle = read_incident_bundle(out)
    assert bundle.journal_path("events") == out / "journals" / "events"
    assert sorted(p.name for p in bundle.journal_path("events").iterdir()) == ["seg-0.journal"]
    with pytest.raises(ArtifactError, match="no journal lane 'other'"):
        bundle.journal_path("other")
    (out / "journals" / "events" / "seg-0.journal").write_bytes(b"\x01" * 64)
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        read_incident_bundle(out)
    (out / "runtime.json").unlink()
    with pytest.raises(ArtifactError, match=r"missing required file\(s\): runtime.json"):
        read_incident_bundle(out, verify=False)
    bad = cli("incident-bundle", f"--spec={good_spec}", f"--out={tmp_path / 'c'}", "--journal=nolane")
    assert bad.returncode == 2 and "LANE=DIR" in bad.stderr


def test_bundle_manifest_newer_major_is_rejected(cli: Cli, tmp_path: Path, good_spec: Path) -> None:
    out = tmp_path / "b"
    assert cli("incident-bundle", f"--spec={good_spec}", f"--out={out}").returncode == 0
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["bundle_v"] = 2
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="incident_bundle version 2 is newer"):
        read_incident_bundle(out)


def test_redact_rules_apply_to_bundle_json(cli: Cli, tmp_path: Path, good_spec: Path) -> None:
    rules = tmp_path / "rules.txt"
    rules.write_text("# operator rules\ncwd:hash\nspec_path:mask=0:3:*\n")
    out = tmp_path / "b"
    workdir = tmp_path / "secret-project-dir"
    workdir.mkdir()
    res = cli(
        "incident-bundle", f"--spec={good_spec}", f"--out={out}", f"--redact-rules={rules}", cwd=workdir
    )
    assert res.returncode == 0, res.stderr
    env = json.loads((out / "environment.json").read_text())
    assert env["cwd"].startswith("sha256:") and b"secret-project-dir" not in _all_bytes(out)
    audit = json.loads((out / "policy_audit.json").read_text())
    assert audit["spec_path"].endswith(".kv") and set(audit["spec_path"][:-3]) == {"*"}
    assert read_incident_bundle(out).environment.cwd == env["cwd"]


def test_a_failed_bundle_leaves_nothing_behind(cli: Cli, tmp_path: Path, good_spec: Path) -> None:
    rules = tmp_path / "rules.txt"
    rules.write_text("cwd:explode\n")
    parent = tmp_path / "cases"
    res = cli("incident-bundle", f"--spec={good_spec}", f"--out={parent / 'b'}", f"--redact-rules={rules}")
    assert res.returncode != 0 and "explode" in res.stderr and "Traceback" not in res.stderr
    assert list(parent.iterdir()) == []  # no half bundle, no staging directory
    rules.write_text("cwd:hash\n")
    res = cli("incident-bundle", f"--spec={good_spec}", f"--out={parent / 'b'}", f"--redact-rules={rules}")
    assert res.returncode == 0, res.stderr
    assert [p.name for p in parent.iterdir()] == ["b"]


def test_environment_of_another_process(cli: Cli, tmp_path: Path, good_spec: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", **SECRETS}
    proc = subprocess.Popen(["sleep", "60"], env=env, cwd=tmp_path)
    try:
        out = tmp_path / "b"
        res = cli("incident-bundle", f"--spec={good_spec}", f"--out={out}", f"--pid={proc.pid}")
        assert res.returncode == 0, res.stderr
        rec = read_incident_bundle(out).environment
        assert rec.pid == proc.pid and rec.args == ("sleep", "60") and rec.cwd == str(tmp_path)
        assert dict(rec.env)["FOO_TOKEN"] == "<redacted>" and dict(rec.env)["PATH"] == "/usr/bin:/bin"
        blob = _all_bytes(out)
        assert not any(v.encode() in blob for v in SECRET_VALUES)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    res = cli("incident-bundle", f"--spec={good_spec}", f"--out={tmp_path / 'c'}", f"--pid={proc.pid}")
    assert res.returncode == 2 and "no such process" in res.stderr and not (tmp_path / "c").exists()
