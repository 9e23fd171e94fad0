"""Every artifact writer has a reader; round trips are exact and newer majors are rejected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from byteor import ArtifactError
from byteor.artifacts import (
    REDACTED,
    EnvironmentRecord,
    ReplayAudit,
    ReplayAuditAction,
    ReplayAuditInput,
    ReplayAuditOutcome,
    ReplayAuditPolicy,
    RuntimeInfo,
    SpecValidation,
    capture_environment,
    read_environment,
    read_replay_audit,
    read_runtime,
    read_spec_validation,
    redact_env,
    redact_value,
    runtime_info,
    write_environment,
    write_replay_audit,
    write_runtime,
    write_spec_validation,
)
from byteor.artifacts.environment import redact_args


def _audit(outcome: ReplayAuditOutcome | None = None) -> ReplayAudit:
    return ReplayAudit(
        created_unix_ms=1_790_000_000_123,
        bundle_dir="/tmp/bundle",
        spec_sha256="sha256:" + "ab" * 32,
        input=ReplayAuditInput("events", "/tmp/bundle/journals/events", 3, 10, 42, ("sha256:" + "01" * 32,)),
        policy=ReplayAuditPolicy("staging", True, "execute"),
        actions=(
            ReplayAuditAction(
                "http_post", "post", "ingress", "egress", "http_post:http://x/", "http://x/", "Allow"
            ),
        ),
        outcome=outcome,
    )


def test_replay_audit_round_trip_keeps_every_seed_field(tmp_path: Path) -> None:
    path = tmp_path / "audit.json"
    audit = _audit(ReplayAuditOutcome(True, 3))
    write_replay_audit(path, audit)
    assert read_replay_audit(path) == audit
    obj = json.loads(path.read_text())
    assert list(obj)[:7] == [
        "audit_v",
        "created_unix_ms",
        "bundle_dir",
        "spec_sha256",
        "input",
        "policy",
        "actions",
    ]
    assert set(obj["input"]) == {
        "journal_lane",
        "journal_path",
        "last_n",
        "scanned_records",
        "selected_bytes",
        "sample_sha256",
    }
    assert set(obj["policy"]) == {"env", "approval_provided", "mode"}
    assert set(obj["actions"][0]) == {
        "action",
        "role",
        "input_lane",
        "output_lane",
        "stage",
        "target",
        "decision",
    }


def test_replay_audit_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "audit.json"
    write_replay_audit(path, _audit())
    before = path.read_bytes()
    with pytest.raises(ArtifactError, match="already exists"):
        write_replay_audit(path, _audit(ReplayAuditOutcome(False, 0, "max_actions", "x")))
    assert path.read_bytes() == before


def test_replay_audit_without_outcome_reads(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write_replay_audit(path, _audit())
    assert read_replay_audit(path).outcome is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("audit_v", 2, "newer than this byteor supports"),
        ("audit_v", "x", "positive integer version"),
        ("bundle_dir", 5, "`bundle_dir` must be a string"),
        ("created_unix_ms", -1, "must be >= 0"),
    ],
)
def test_replay_audit_reader_rejects(tmp_path: Path, field: str, value: object, message: str) -> None:
    obj = _audit().to_json()
    obj[field] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ArtifactError, match=message):
        read_replay_audit(path)


def test_replay_audit_reader_names_missing_fields(tmp_path: Path) -> None:
    obj = _audit().to_json()
    del obj["actions"][0]["decision"]
    obj["policy"]["mode"] = "dry_run"
    (tmp_path / "a.json").write_text(json.dumps(obj))
    with pytest.raises(ArtifactError, match="missing field `decision`"):
        read_replay_audit(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="must be a JSON object"):
        read_replay_audit(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{")
    with pytest.raises(ArtifactError, match="not JSON"):
        read_replay_audit(tmp_path / "c.json")


def test_spec_validation_round_trip_both_shapes(tmp_path: Path) -> None:
    for value in (SpecValidation(True, description="ok pipeline"), SpecValidation(False, error="bad at `x`")):
        path = tmp_path / f"{value.ok}.json"
        write_spec_validation(path, value)
        assert read_spec_validation(path) == value
        obj = json.loads(path.read_text())
        assert ("description" in obj) == value.ok and ("error" in obj) == (not value.ok)


def test_spec_validation_without_version_field_reads_as_v1(tmp_path: Path) -> None:
    (tmp_path / "v.json").write_text('{"ok": false, "error": "boom"}')
    assert read_spec_validation(tmp_path / "v.json") == SpecValidation(False, error="boom")
    (tmp_path / "n.json").write_text('{"validation_v": 7, "ok": true, "description": "d"}')
    with pytest.raises(ArtifactError, match="spec_validation version 7 is newer"):
        read_spec_validation(tmp_path / "n.json")


def test_runtime_round_trip_names_the_installed_distribution(tmp_path: Path) -> None:
    from importlib import metadata

    write_runtime(tmp_path / "runtime.json")
    info = read_runtime(tmp_path / "runtime.json")
    assert info == runtime_info() == RuntimeInfo("byteor", metadata.version("byteor"))
    obj = json.loads((tmp_path / "runtime.json").read_text())
    assert obj["crate"] == {"name": "byteor", "version": metadata.version("byteor")}
    obj["runtime_v"] = 2
    (tmp_path / "runtime.json").write_text(json.dumps(obj))
    with pytest.raises(ArtifactError, match="newer"):
        read_runtime(tmp_path / "runtime.json")


def test_environment_round_trip_and_seed_fields(tmp_path: Path) -> None:
    rec = capture_environment(args=["byteor", "incident-bundle"], env={"B": "2", "A": "1"})
    path = tmp_path / "environment.json"
    write_environment(path, rec)
    back = read_environment(path)
    assert back == rec
    assert back.pid == os.getpid() and back.cwd == os.getcwd()
    assert back.env == (("A", "1"), ("B", "2"))
    assert back.proc_status is not None and "Pid:" in back.proc_status
    obj = json.loads(path.read_text())
    assert {"pid", "cwd", "args", "env", "proc_status"} <= set(obj)
    assert obj["env"] == [["A", "1"], ["B", "2"]]


def test_environment_reader_checks_order_and_types(tmp_path: Path) -> None:
    base = {"pid": 1, "cwd": None, "args": [], "env": [["B", "x"], ["A", "y"]], "proc_status": None}
    (tmp_path / "e.json").write_text(json.dumps(base))
    with pytest.raises(ArtifactError, match="sorted by name"):
        read_environment(tmp_path / "e.json")
    base["env"] = [["A"]]
    (tmp_path / "e.json").write_text(json.dumps(base))
    with pytest.raises(ArtifactError, match=r"`env.0` must be a \[name, value\] pair"):
        read_environment(tmp_path / "e.json")
    base["env"] = []
    base["environment_v"] = 3
    (tmp_path / "e.json").write_text(json.dumps(base))
    with pytest.raises(ArtifactError, match="environment version 3 is newer"):
        read_environment(tmp_path / "e.json")


@pytest.mark.parametrize(
    "name",
    [
        "FOO_TOKEN",
        "DB_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "my_passwd",
        "GITHUB_CREDENTIALS",
        "HTTP_AUTH",
        "session_id",
        "COOKIE_JAR",
        "PRIVATE_PEM",
        "api_key",
    ],
)
def test_secret_names_are_redacted(name: str) -> None:
    assert dict(redact_env({name: "hunter2", "PATH": "/bin"})) == {name: REDACTED, "PATH": "/bin"}


def test_url_credentials_are_redacted_anywhere_in_a_value() -> None:
    assert redact_value("postgres://admin:s3cr3t@db:5432/x") == f"postgres://{REDACTED}@db:5432/x"
    assert (
        redact_value("a=https://tok@h/p,b=http://u:p@q") == f"a=https://{REDACTED}@h/p,b=http://{REDACTED}@q"
    )
    assert redact_value("https://example.com/a@b") == "https://example.com/a@b"
    assert redact_value("user@example.com") == "user@example.com"


def test_args_redaction() -> None:
    out = redact_args(["byteor", "--api-key=abc", "--url=http://u:pw@h/", "--spec=x.kv", "--token", "t"])
    assert out == [
        "byteor",
        f"--api-key={REDACTED}",
        f"--url=http://{REDACTED}@h/",
        "--spec=x.kv",
        "--token",
        REDACTED,
    ]


def test_writer_redacts_a_hand_built_record(tmp_path: Path) -> None:
    rec = EnvironmentRecord(1, None, ("x",), (("DB_PASSWORD", "pw"), ("U", "ftp://a:b@c")), None)
    write_environment(tmp_path / "e.json", rec)
    text = (tmp_path / "e.json").read_text()
    assert "pw" not in text.replace("PASSWORD", "") and "a:b" not in text
