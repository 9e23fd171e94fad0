"""Test plugin for the policy and action tests: a real recording HTTP server (the ``http_target``
fixture), spec files with action stages, Ed25519 signers, key sets and the approval rejection matrix.

Loaded by ``conftest.py`` (``pytest_plugins``); tests import the helpers from here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from byteor import load_spec_file, spec_hash
from byteor._formats import b64url_decode, b64url_encode
from byteor.policy import issue_credential
from byteor.policy.approvals import encode_payload


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: int = 0  # the client's source port: one port for many requests means keep-alive


@dataclass
class Recorder:
    """What the server saw, and what it should answer next."""

    requests: list[Request] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in order, then 200
    keys_doc: Any = None  # JSON served at /v1/agents/<id>/signing-keys
    bearer: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # headers and body go out as two writes: without TCP_NODELAY each keep-alive answer waits for the
    # client's delayed ACK (40 ms), which caps a pipeline posting to it at 25 messages a second
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _answer(self, status: int, body: bytes = b"", ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        rec = self.server.recorder
        with rec.lock:
            rec.requests.append(Request("POST", self.path, self._headers(), body, self.client_address[1]))
            status = rec.statuses.pop(0) if rec.statuses else 200
        self._answer(status, b"ok" if status < 300 else b"nope")

    def do_GET(self) -> None:
        rec = self.server.recorder
        with rec.lock:
            rec.requests.append(Request("GET", self.path, self._headers(), b""))
        if rec.keys_doc is not None and self.path.endswith("/signing-keys"):
            if rec.bearer is not None and self.headers.get("Authorization") != f"Bearer {rec.bearer}":
                self._answer(401, b"unauthorized")
                return
            self._answer(200, json.dumps(rec.keys_doc).encode(), "application/json")
            return
        self._answer(404, b"not found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    recorder: Recorder


@dataclass
class HttpTarget:
    base: str
    recorder: Recorder
    server: _Server

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_server() -> HttpTarget:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.recorder = Recorder()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    host, port = srv.server_address[:2]
    return HttpTarget(f"http://{host}:{port}", srv.recorder, srv)


@pytest.fixture
def http_target() -> Iterator[HttpTarget]:
    target = start_server()
    yield target
    target.stop()


# -- specs -------------------------------------------------------------------------------------------

def write_spec(directory: Path, *keys: str, name: str = "actions", filename: str = "spec.kv") -> Path:
    """A SingleRing spec: stage 0 identity, then one resolver stage per key."""
    lines = [f"pipeline.name={name}", "pipeline.target=SingleRing", "pipeline.stages.0.id=start"]
    for i, key in enumerate(keys, start=1):
        lines += [f"pipeline.stages.{i}.id=act{i}", f"pipeline.stages.{i}.op=resolver",
                  f"pipeline.stages.{i}.resolver_key={key}", f"pipeline.stages.{i}.depends_on.0=0"]
    path = directory / filename
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_lanegraph_spec(directory: Path, key: str, filename: str = "lanes.kv") -> Path:
    lines = [
        "pipeline.name=lg", "pipeline.target=LaneGraph",
        "pipeline.lanes.0.name=in", "pipeline.lanes.0.kind=events",
        "pipeline.lanes.1.name=out", "pipeline.lanes.1.kind=events",
        "pipeline.endpoints.0.name=src", "pipeline.endpoints.0.direction=ingress",
        "pipeline.endpoints.0.lane=in",
        "pipeline.endpoints.1.name=dst", "pipeline.endpoints.1.direction=egress",
        "pipeline.endpoints.1.lane=out",
        "pipeline.roles.0.name=poster", "pipeline.roles.0.kind=stage", "pipeline.roles.0.inputs.0=in",
        "pipeline.roles.0.outputs.0=out", "pipeline.roles.0.op=resolver",
        f"pipeline.roles.0.resolver_key={key}",
    ]
    path = directory / filename
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- keys and credentials --------------------------------------------------------------------------

@dataclass
class Signer:
    kid: str
    key: Ed25519PrivateKey

    @property
    def entry(self) -> dict[str, str]:
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kid": self.kid, "alg": "ed25519", "public_key": b64url_encode(raw)}

    def issue(self, spec_hash: str, posture: str, caps: list[str], ttl: timedelta = timedelta(hours=1),
              **kw: Any) -> str:
        return issue_credential(self.key, kid=self.kid, spec_hash=spec_hash, posture=posture,
                                capabilities=caps, ttl=ttl, **kw)

    def write_pem(self, path: Path) -> Path:
        path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        return path


def new_signer(kid: str = "k1") -> Signer:
    return Signer(kid, Ed25519PrivateKey.generate())


def write_key_set(path: Path, *signers: Signer, shape: str = "object") -> Path:
    entries = [s.entry for s in signers]
    doc: Any = entries if shape == "list" else {"keys": entries}
    if shape == "cache":
        doc = {"source": "cached", "last_refresh_at": None, "keys": entries}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def sign_raw(signer: Signer, fields: dict[str, object]) -> str:
    payload = encode_payload(fields)
    return f"{b64url_encode(payload)}.{b64url_encode(signer.key.sign(payload))}"


def credential_fields(cred: str) -> dict[str, object]:
    obj = json.loads(b64url_decode(cred.split(".", maxsplit=1)[0]))
    assert isinstance(obj, dict)
    return obj


def rejection_matrix(h: str, signer: Signer, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """case -> (credential, expected failed check)."""
    good = signer.issue(h, "staging", ["http_post"])
    payload, sig = good.split(".")
    other = write_spec(tmp_path, "http_post:http://127.0.0.1:9/other", filename="other.kv")
    tampered_payload = b64url_encode(encode_payload({**credential_fields(good), "capabilities": ["exec", "http_post"]}))
    sig_bytes = bytearray(b64url_decode(sig))
    sig_bytes[0] ^= 1
    v2 = sign_raw(signer, {**credential_fields(good), "v": 2})
    expired = signer.issue(h, "staging", ["http_post"], ttl=timedelta(minutes=5),
                           issued_at=datetime.now(UTC) - timedelta(hours=2))
    return {
        "bad encoding": ("%%%not-base64%%%.AAAA", "decode"),
        "padded base64": (payload + "==." + sig, "decode"),
        "tampered payload": (f"{tampered_payload}.{sig}", "signature"),
        "tampered signature": (f"{payload}.{b64url_encode(bytes(sig_bytes))}", "signature"),
        "unknown kid": (new_signer("k9").issue(h, "staging", ["http_post"]), "signature"),
        "wrong version": (v2, "version"),
        "other spec hash": (signer.issue(spec_hash(load_spec_file(other)), "staging", ["http_post"]),
                            "spec_hash"),
        "wrong posture": (signer.issue(h, "prod", ["http_post"]), "environment"),
        "expired": (expired, "expiry"),
        "missing capability": (signer.issue(h, "staging", ["exec"]), "capabilities"),
    }
