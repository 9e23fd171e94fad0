"""http_post stage throughput and the startup cost of approval verification.

Peers measured in the same run, against the same local keep-alive HTTP server (127.0.0.1:0):

* ``httpx loop``: a plain ``httpx.Client`` posting the same bodies (the floor for any Python POST);
* ``http_post stage``: byteor's resolved stage function (idempotency hash, retry wrapper, pooled client);
* ``http_post dry-run``: the same stage under ``DryRunOnly`` (records, sends nothing).

Startup: ``gate_run`` in dev (no approval needed) against prod with a credential to verify (decode,
Ed25519 signature, checks), and ``verify_credential`` alone.

    python -m benchmarks.actions [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

from byteor import load_spec_file, spec_hash
from byteor._formats import b64url_encode
from byteor.actions import resolve_action
from byteor.policy import issue_credential, load_key_set, verify_credential
from byteor.policy.gate import gate_run


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _server() -> tuple[ThreadingHTTPServer, str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    host, port = srv.server_address[:2]
    return srv, f"http://{host}:{port}"


def _rate(fn: Callable[[], None], n: int) -> float:
    """Operations per second of ``fn`` over ``n`` calls (after a short warm-up)."""
    for _ in range(min(20, n)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def _median_us(fn: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def _write_spec(directory: Path, url: str) -> Path:
    path = directory / "spec.kv"
    path.write_text("pipeline.name=bench\npipeline.target=SingleRing\npipeline.stages.0.id=src\n"
                    "pipeline.stages.1.id=post\npipeline.stages.1.op=resolver\n"
                    f"pipeline.stages.1.resolver_key=http_post:{url}\npipeline.stages.1.depends_on.0=0\n")
    return path


def run(quick: bool) -> dict[str, Any]:
    n_posts = 300 if quick else 3000
    n_gate = 20 if quick else 200
    body = os.urandom(128)
    srv, base = _server()
    results: dict[str, Any] = {"posts": n_posts, "body_bytes": len(body), "throughput": {}, "startup_us": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"{base}/ingest"
            spec_path = _write_spec(Path(tmp), url)
            spec = load_spec_file(spec_path)
            h = spec_hash(spec)
            key = f"http_post:{url}"

            with httpx.Client(timeout=10) as client:
                results["throughput"]["httpx loop"] = _rate(lambda: _post(client, url, body), n_posts)

            gate = gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="dev", dry_run=False,
                            approval=None, key_set=None)
            stage = resolve_action(key, gate.context)
            slot = bytearray(256)
            slot[: len(body)] = body
            view = memoryview(slot)
            try:
                results["throughput"]["http_post stage"] = _rate(lambda: _call(stage.fn, view, len(body)),
                                                                 n_posts)
            finally:
                if stage.close is not None:
                    stage.close()
            dry = gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=True,
                           approval=None, key_set=None, recorder=lambda rec: None)
            dry_stage = resolve_action(key, dry.context)
            results["throughput"]["http_post dry-run"] = _rate(lambda: _call(dry_stage.fn, view, len(body)),
                                                               n_posts * 10)

            private = Ed25519PrivateKey.generate()
            raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)
            keys_path = Path(tmp) / "keys.json"
            entry = {"kid": "b", "alg": "ed25519", "public_key": b64url_encode(raw)}
            keys_path.write_text(json.dumps([entry]))
            cred = issue_credential(private, kid="b", spec_hash=h, posture="prod", capabilities=["http_post"],
                                    ttl=timedelta(hours=1))
            key_set = load_key_set(str(keys_path))

            def gate_dev() -> object:
                return gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="dev", dry_run=False,
                                approval=None, key_set=None)

            def gate_prod() -> object:
                return gate_run(spec, spec_path=str(spec_path), spec_hash=h, posture="prod", dry_run=False,
                                approval=cred, key_set=str(keys_path))

            def verify_only() -> object:
                return verify_credential(cred, keys=key_set, spec_hash=h, posture="prod",
                                         required=["http_post"])

            results["startup_us"]["gate_run dev (no approval)"] = _median_us(gate_dev, n_gate)
            results["startup_us"]["gate_run prod (verify approval)"] = _median_us(gate_prod, n_gate)
            results["startup_us"]["verify_credential alone"] = _median_us(verify_only, n_gate)
    finally:
        srv.shutdown()
        srv.server_close()
    return results


def _post(client: httpx.Client, url: str, body: bytes) -> None:
    client.post(url, content=body).raise_for_status()


def _call(fn: Callable[[memoryview, int], int], view: memoryview, n: int) -> None:
    fn(view, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.actions", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (CI smoke)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = run(args.quick)
    con = Console(highlight=False)
    base = results["throughput"]["httpx loop"]
    table = Table(title=f"http_post throughput ({results['posts']} posts of {results['body_bytes']} B, "
                        "local keep-alive server)")
    for col in ("peer", "posts/s", "vs httpx loop"):
        table.add_column(col, justify="right" if col != "peer" else "left")
    for name, rate in results["throughput"].items():
        table.add_row(name, f"{rate:,.0f}", f"{rate / base:.2f}x")
    con.print(table)
    startup = Table(title="startup: policy gate with and without approval verification (median)")
    ref = results["startup_us"]["gate_run dev (no approval)"]
    for col in ("step", "µs", "vs dev gate"):
        startup.add_column(col, justify="right" if col != "step" else "left")
    for name, us in results["startup_us"].items():
        startup.add_row(name, f"{us:,.0f}", f"{us / ref:.2f}x")
    con.print(startup)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
