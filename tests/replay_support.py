"""Test plugin for the replay tests: a real recording HTTP server (``server``), the ``byteor`` command
runner, a real incident bundle with a journal (``bundle``) and a signing key (``signing_keys``).

Loaded by ``conftest.py`` (``pytest_plugins``); tests import the helpers from here."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from byteor.lanes.journal import JournalWriter
from byteor.spec.kv import decode_kv, spec_hash

BIN = Path(sys.executable).parent
RECORDS = [f"order-{i:02d}".encode() for i in range(8)]
TEE = "/usr/bin/tee"


class RecordingServer(http.server.ThreadingHTTPServer):
    """A real local HTTP server that records every POST body and its Idempotency-Key."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHook)
        self.received: list[tuple[bytes, str]] = []


class RecordingHook(http.server.BaseHTTPRequestHandler):
    server: RecordingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((body, self.headers.get("Idempotency-Key", "")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def received(srv: RecordingServer) -> list[tuple[bytes, str]]:
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


def replay_spec_text(port: int, sink: Path) -> str:
    return (
        "pipeline.name=orders\npipeline.target=SingleRing\n"
        "pipeline.stages.0.id=bump\npipeline.stages.0.op=add_u8\npipeline.stages.0.delta=1\n"
        f"pipeline.stages.1.id=notify\npipeline.stages.1.op=resolver\n"
        f"pipeline.stages.1.resolver_key=http_post:http://127.0.0.1:{port}/hook\n"
        "pipeline.stages.1.depends_on.0=0\n"
        f"pipeline.stages.2.id=archive\npipeline.stages.2.op=resolver\n"
        f"pipeline.stages.2.resolver_key=exec:{TEE}|-a|{sink}\npipeline.stages.2.depends_on.0=0\n"
    )


def journal_spec_hash(spec: Path) -> str:
    """The spec hash a run of ``spec`` records in its journal segments (replay checks it)."""
    return spec_hash(decode_kv(spec.read_bytes()))


@pytest.fixture
def bundle(tmp_path: Path, server: RecordingServer, byteor: Run) -> Path:
    sink = tmp_path / "exec-sink.txt"
    spec = tmp_path / "spec.kv"
    spec.write_text(replay_spec_text(server.server_address[1], sink))
    jdir = tmp_path / "journal-events"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=journal_spec_hash(spec)) as writer:
        for rec in RECORDS:
            writer.append(rec)
    out = tmp_path / "bundle"
    res = byteor("incident-bundle", f"--spec={spec}", f"--out={out}", f"--journal=events={jdir}")
    assert res.returncode == 0, res.stderr
    return out


def bumped(rec: bytes) -> bytes:
    return bytes((b + 1) & 0xFF for b in rec)


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def signing_keys(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pub = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"kid": "ops-1", "alg": "ed25519", "public_key": pub}]}))
    return key, path
