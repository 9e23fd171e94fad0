"""``replay`` end to end: real journal, real bundle, real local HTTP server, real approvals."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from byteor.artifacts import read_replay_audit
from byteor.lanes.journal import JournalWriter
from byteor.policy.approvals import issue_credential
from byteor.spec.kv import decode_kv, spec_hash

BIN = Path(sys.executable).parent
RECORDS = [f"order-{i:02d}".encode() for i in range(8)]
TEE = "/usr/bin/tee"


def _hash_of(spec: Path) -> str:
    """The spec hash a run of ``spec`` records in its journal segments."""
    return spec_hash(decode_kv(spec.read_bytes()))


class _Server(http.server.ThreadingHTTPServer):
    """A real local HTTP server that records every POST body and its Idempotency-Key."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.received: list[tuple[bytes, str]] = []


class _Hook(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((body, self.headers.get("Idempotency-Key", "")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def _received(srv: _Server) -> list[tuple[bytes, str]]:
    return srv.received


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def byteor(tmp_path: Path) -> Run:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BYTEOR_EXEC_ALLOWLIST": TEE}
        full.update(env or {})
        return subprocess.run(
            [str(BIN / "byteor"), *args], capture_output=True, text=True, env=full, timeout=120, check=False
        )

    return run


def _spec_text(port: int, sink: Path) -> str:
    return (
        "pipeline.name=orders\npipeline.target=SingleRing\n"
        "pipeline.stages.0.id=bump\npipeline.stages.0.op=add_u8\npipeline.stages.0.delta=1\n"
        f"pipeline.stages.1.id=notify\npipeline.stages.1.op=resolver\n"
        f"pipeline.stages.1.resolver_key=http_post:http://127.0.0.1:{port}/hook\n"
        "pipeline.stages.1.depends_on.0=0\n"
        f"pipeline.stages.2.id=archive\npipeline.stages.2.op=resolver\n"
        f"pipeline.stages.2.resolver_key=exec:{TEE}|-a|{sink}\npipeline.stages.2.depends_on.0=0\n"
    )


@pytest.fixture
def bundle(tmp_path: Path, server: _Server, byteor: Run) -> Path:
    sink = tmp_path / "exec-sink.txt"
    spec = tmp_path / "spec.kv"
    spec.write_text(_spec_text(server.server_address[1], sink))
    jdir = tmp_path / "journal-events"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=_hash_of(spec)) as writer:
        for rec in RECORDS:
            writer.append(rec)
    out = tmp_path / "bundle"
    res = byteor("incident-bundle", f"--spec={spec}", f"--out={out}", f"--journal=events={jdir}")
    assert res.returncode == 0, res.stderr
    return out


def _bumped(rec: bytes) -> bytes:
    return bytes((b + 1) & 0xFF for b in rec)


def _sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_dry_run_performs_nothing_and_records_every_action(
    bundle: Path, server: _Server, byteor: Run, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.json"
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=3",
        "--mode=dry_run",
        "--env=staging",
        f"--out={audit_path}",
    )
    assert res.returncode == 0, res.stderr
    assert _received(server) == []
    assert not (tmp_path / "exec-sink.txt").exists()
    audit = read_replay_audit(audit_path)
    assert audit.input.scanned_records == len(RECORDS) and audit.input.last_n == 3
    assert audit.input.sample_sha256 == tuple(_sha(r) for r in RECORDS[-3:])
    assert audit.input.selected_bytes == sum(len(r) for r in RECORDS[-3:])
    assert (
        audit.policy.mode == "dry_run"
        and audit.policy.env == "staging"
        and not audit.policy.approval_provided
    )
    assert audit.spec_sha256 == spec_hash(decode_kv((bundle / "spec.kv").read_bytes()))
    assert [(a.role, a.action, a.decision) for a in audit.actions] == [
        ("notify", "http_post", "DryRunOnly"),
        ("archive", "exec", "DryRunOnly"),
    ] * 3
    first = audit.actions[0]
    assert first.input_lane == "ingress" and first.output_lane == "egress"
    assert first.stage.startswith("http_post:http://127.0.0.1:") and first.target.endswith("/hook")
    assert audit.actions[1].target == TEE
    assert audit.outcome is not None and audit.outcome.completed and audit.outcome.records_replayed == 3


def test_dry_run_records_deny_when_exec_is_not_allowlisted(bundle: Path, byteor: Run, tmp_path: Path) -> None:
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=1",
        f"--out={tmp_path / 'a'}",
        "--json",
        env={"BYTEOR_EXEC_ALLOWLIST": ""},
    )
    assert res.returncode == 0, res.stderr
    decisions = [a["decision"] for a in json.loads(res.stdout)["audit"]["actions"]]
    assert decisions == ["DryRunOnly", "Deny"]


def test_execute_without_approval_is_refused(
    bundle: Path, server: _Server, byteor: Run, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.json"
    for env in ("dev", "staging"):
        res = byteor(
            "replay",
            f"--bundle={bundle}",
            "--journal-lane=events",
            "--last-n=2",
            "--mode=execute",
            f"--env={env}",
            f"--out={audit_path}",
        )
        assert res.returncode == 4, res.stderr
        assert "RequireApproval" in res.stderr and "replay_execute" in res.stderr
    assert _received(server) == [] and not audit_path.exists()


def _keys(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pub = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"kid": "ops-1", "alg": "ed25519", "public_key": pub}]}))
    return key, path


def test_execute_with_approval_delivers_selected_records_once(
    bundle: Path, server: _Server, byteor: Run, tmp_path: Path
) -> None:
    key, key_set = _keys(tmp_path)
    shash = spec_hash(decode_kv((bundle / "spec.kv").read_bytes()))
    cred = issue_credential(
        key,
        kid="ops-1",
        spec_hash=shash,
        posture="staging",
        capabilities=["http_post", "exec", "replay_execute"],
        ttl=timedelta(hours=1),
    )
    cred_file = tmp_path / "approval.cred"
    cred_file.write_text(cred + "\n")
    audit_path = tmp_path / "audit.json"
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=3",
        "--mode=execute",
        "--env=staging",
        f"--approval={cred_file}",
        f"--approval-key-set={key_set}",
        f"--out={audit_path}",
    )
    assert res.returncode == 0, res.stderr
    expected = [_bumped(r) for r in RECORDS[-3:]]
    assert _received(server) == [(b, _sha(b)) for b in expected]
    assert (tmp_path / "exec-sink.txt").read_bytes() == b"".join(expected)
    audit = read_replay_audit(audit_path)
    assert audit.policy.approval_provided and audit.policy.mode == "execute"
    assert {a.decision for a in audit.actions} == {"Allow"} and len(audit.actions) == 6
    # The audit is immutable: the same --out is refused and nothing is sent again.
    again = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=3",
        "--mode=execute",
        "--env=staging",
        f"--approval={cred_file}",
        f"--approval-key-set={key_set}",
        f"--out={audit_path}",
    )
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert len(_received(server)) == 3
    # An approval without replay_execute is not enough.
    weak = issue_credential(
        key,
        kid="ops-1",
        spec_hash=shash,
        posture="staging",
        capabilities=["http_post", "exec"],
        ttl=timedelta(hours=1),
    )
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=3",
        "--mode=execute",
        "--env=staging",
        f"--approval={weak}",
        f"--approval-key-set={key_set}",
        f"--out={tmp_path / 'weak.json'}",
    )
    assert res.returncode == 4 and "capabilities" in res.stderr
    assert len(_received(server)) == 3


def test_limits_stop_with_a_clear_message_and_a_complete_audit(
    bundle: Path, server: _Server, byteor: Run, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.json"
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=5",
        "--max-actions=3",
        f"--out={audit_path}",
    )
    assert res.returncode == 4
    assert "replay stopped after 1 of 5 record(s)" in res.stderr and str(audit_path) in res.stderr
    assert "Traceback" not in res.stderr
    audit = read_replay_audit(audit_path)
    assert len(audit.actions) == 3 and audit.outcome is not None
    assert audit.outcome.stopped_by == "max_actions" and audit.outcome.records_replayed == 1
    assert not audit.outcome.completed and len(audit.input.sample_sha256) == 5

    by_bytes = tmp_path / "bytes.json"
    res = byteor(
        "replay",
        f"--bundle={bundle}",
        "--journal-lane=events",
        "--last-n=5",
        "--max-bytes=20",
        f"--out={by_bytes}",
    )
    assert res.returncode == 4 and "replay stopped after 2 of 5" in res.stderr
    audit = read_replay_audit(by_bytes)
    assert audit.outcome is not None and audit.outcome.stopped_by == "max_bytes" and len(audit.actions) == 4
    assert _received(server) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-actions=10001"], "between 0 and 10000"),
        (["--last-n=0"], "--last-n must be >= 1"),
        (["--journal-lane=nope"], "no journal lane 'nope'"),
        (["--mode=live"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(
    bundle: Path, byteor: Run, tmp_path: Path, args: list[str], message: str
) -> None:
    base = {"--journal-lane": "--journal-lane=events", "--last-n": "--last-n=2"}
    for a in args:
        base[a.split("=", 1)[0]] = a
    res = byteor("replay", f"--bundle={bundle}", *base.values(), f"--out={tmp_path / 'x.json'}")
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    missing = byteor(
        "replay",
        f"--bundle={tmp_path / 'none'}",
        "--journal-lane=events",
        "--last-n=1",
        f"--out={tmp_path / 'y.json'}",
    )
    assert missing.returncode == 2 and "bundle does not exist" in missing.stderr


def test_replay_from_a_tar_bundle(tmp_path: Path, server: _Server, byteor: Run) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text(_spec_text(server.server_address[1], tmp_path / "sink"))
    jdir = tmp_path / "j"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=_hash_of(spec)) as writer:
        writer.append(b"only")
    assert (
        byteor(
            "incident-bundle",
            f"--spec={spec}",
            f"--out={tmp_path / 'case'}",
            "--tar",
            f"--journal=events={jdir}",
        ).returncode
        == 0
    )
    res = byteor(
        "replay",
        f"--bundle={tmp_path / 'case.tar.gz'}",
        "--journal-lane=events",
        "--last-n=9",
        f"--out={tmp_path / 'a.json'}",
    )
    assert res.returncode == 0, res.stderr
    audit = read_replay_audit(tmp_path / "a.json")
    assert audit.input.scanned_records == 1 and audit.input.sample_sha256 == (_sha(b"only"),)


STAGE_MODULE = """
def upper(slot, length):
    slot[:length] = bytes(slot[:length]).upper()
    return length
"""


def test_execute_runs_python_stages_through_the_registry(
    tmp_path: Path, server: _Server, byteor: Run
) -> None:
    (tmp_path / "h7_replay_stage.py").write_text(STAGE_MODULE)
    spec = tmp_path / "spec.kv"
    spec.write_text(
        "pipeline.name=py\npipeline.target=SingleRing\n"
        "pipeline.stages.0.id=up\npipeline.stages.0.op=resolver\npipeline.stages.0.resolver_key=py:h7_replay_stage:upper\n"
        "pipeline.stages.1.id=post\npipeline.stages.1.op=resolver\n"
        f"pipeline.stages.1.resolver_key=http_post:http://127.0.0.1:{server.server_address[1]}/py\n"
        "pipeline.stages.1.depends_on.0=0\n"
    )
    jdir = tmp_path / "j"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=_hash_of(spec)) as writer:
        for rec in (b"one", b"two"):
            writer.append(rec)
    env = {"PYTHONPATH": str(tmp_path)}
    assert (
        byteor(
            "incident-bundle",
            f"--spec={spec}",
            f"--out={tmp_path / 'b'}",
            f"--journal=events={jdir}",
            env=env,
        ).returncode
        == 0
    )
    key, key_set = _keys(tmp_path)
    shash = spec_hash(decode_kv((tmp_path / "b" / "spec.kv").read_bytes()))
    cred = issue_credential(
        key,
        kid="ops-1",
        spec_hash=shash,
        posture="dev",
        capabilities=["http_post", "replay_execute"],
        ttl=timedelta(hours=1),
    )
    res = byteor(
        "replay",
        f"--bundle={tmp_path / 'b'}",
        "--journal-lane=events",
        "--last-n=5",
        "--mode=execute",
        f"--approval={cred}",
        f"--approval-key-set={key_set}",
        f"--out={tmp_path / 'a.json'}",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert _received(server) == [(b"ONE", _sha(b"ONE")), (b"TWO", _sha(b"TWO"))]


def test_invalid_bundle_spec_is_exit_3(tmp_path: Path, byteor: Run) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text(
        "pipeline.name=x\npipeline.target=SingleRing\npipeline.constraints.producer=mpmc\n"
        "pipeline.stages.0.id=a\n"
    )
    jdir = tmp_path / "j"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=_hash_of(spec)) as writer:
        writer.append(b"x")
    assert (
        byteor(
            "incident-bundle", f"--spec={spec}", f"--out={tmp_path / 'b'}", f"--journal=events={jdir}"
        ).returncode
        == 0
    )
    res = byteor(
        "replay",
        f"--bundle={tmp_path / 'b'}",
        "--journal-lane=events",
        "--last-n=1",
        f"--out={tmp_path / 'a.json'}",
    )
    assert res.returncode == 3 and "pipeline.constraints.producer" in res.stderr
    assert not (tmp_path / "a.json").exists()
