"""The operator console over plain HTTP against a real ``byteor console`` process and a running
pipeline: security headers, the Host check, read-only by default, writes only with the token and
only by POST from this site, the event stream, the DOT fallback without Graphviz, bad options."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from byteor import load_spec_file
from byteor.spec.dot import to_dot
from conftest import CliRunner
from console_support import Console, Feeder
from obs_support import RunningPipeline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _chain(tmp_path: Path) -> Path:
    spec = tmp_path / "chain.kv"
    shutil.copyfile(EXAMPLES / "chain.kv", spec)
    return spec


def _assert_secure(resp: httpx.Response) -> None:
    for key, value in HEADERS.items():
        assert resp.headers.get(key) == value, (resp.url, key, resp.headers.get(key))
    csp = resp.headers["content-security-policy"]
    for part in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'",
                 "form-action 'self'"):
        assert part in csp, csp
    assert "unsafe-inline" not in csp and "server" not in resp.headers


def test_console_is_read_only_by_default_and_sets_security_headers(
        start_console: Callable[..., Console], fed_pipeline: Callable[..., tuple[RunningPipeline, Feeder]],
        tmp_path: Path) -> None:
    spec = _chain(tmp_path)
    fed_pipeline(spec, lambda i: f"m{i}", 1)
    console = start_console()
    with httpx.Client(base_url=console.url, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'href="/p/chain"' in page.text
        _assert_secure(page)
        assert "<script>" not in page.text and "style=" not in page.text  # nothing inline: the CSP allows none
        js = client.get("/static/console.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        _assert_secure(js)
        detail = client.get("/p/chain")
        assert detail.status_code == 200 and "Writes are turned off" in detail.text
        assert 'type="password"' not in detail.text  # no token field when nothing can be written
        _assert_secure(detail)
        # the event stream: figures as JSON every second
        with client.stream("GET", "/p/chain/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            _assert_secure(stream)
            data = next(line for line in stream.iter_lines() if line.startswith("data: {\"text\""))
        figures = json.loads(data.removeprefix("data: "))
        assert figures["text"]["hdr-state"] in ("READY", "NOT READY") and "node-live-0" in figures["text"]
        # the DOT source is byteor dot's
        dot = client.get("/p/chain/dot")
        assert dot.text == to_dot(load_spec_file(spec))
        # writes: refused (403) while no token was configured; POST only
        refused = client.post("/p/chain/bundle", headers={"Authorization": "Bearer " + "a" * 32})
        assert refused.status_code == 403 and "--token-env" in refused.text
        _assert_secure(refused)
        assert client.get("/p/chain/bundle").status_code == 405
        assert not (tmp_path / "bundles").exists()
        # names only from a scan of the root: nothing else, no path built from a request
        for path in ("/p/nothing", "/p/..%2F..%2Fetc", "/p/chain%2F..", "/static/../_app.py"):
            missing = client.get(path)
            assert missing.status_code == 404, path
            _assert_secure(missing)
        # another Host name (a DNS name rebound to 127.0.0.1 by some web page) is refused
        rebound = client.get("/", headers={"Host": "attacker.example:80"})
        assert rebound.status_code == 400
        _assert_secure(rebound)
    assert "Traceback" not in console.stderr()


def test_console_writes_a_bundle_only_with_the_token_from_this_site(
        start_console: Callable[..., Console], fed_pipeline: Callable[..., tuple[RunningPipeline, Feeder]],
        tmp_path: Path) -> None:
    spec = _chain(tmp_path)
    fed_pipeline(spec, lambda i: f"m{i}", 1)
    token = "t0k3n-" + "9" * 20
    console = start_console(token=token)
    bundles = tmp_path / "bundles"
    with httpx.Client(base_url=console.url, timeout=30) as client:
        missing = client.post("/p/chain/bundle")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert client.post("/p/chain/bundle", headers={"Authorization": "Bearer nope"}).status_code == 403
        assert client.post("/p/chain/bundle", data={"token": token[:-1]}).status_code == 403
        cross = client.post("/p/chain/bundle", data={"token": token}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
        other = client.post("/p/chain/bundle", data={"token": token}, headers={"Origin": "http://attacker.example"})
        assert other.status_code == 403
        assert not bundles.exists() or not any(bundles.iterdir())
        ok = client.post("/p/chain/bundle", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        assert ok.headers["content-disposition"].startswith('attachment; filename="chain-')
        assert ok.content[:2] == b"\x1f\x8b"  # gzip
        assert [p.name for p in bundles.iterdir()] == [ok.headers["content-disposition"].split('"')[1]]
        # a replay preview names a bundle of this pipeline; anything else is refused before any work
        bad = client.post("/p/chain/replay", data={"token": token, "bundle": "../../etc/passwd",
                                                   "journal_lane": "x", "last_n": "1"})
        assert bad.status_code == 400 and "not a bundle of this pipeline" in bad.text
        name = next(bundles.iterdir()).name
        nolane = client.post("/p/chain/replay", data={"token": token, "bundle": name, "journal_lane": "x",
                                                      "last_n": "3"})
        assert nolane.status_code == 400 and "no journal lane &#x27;x&#x27;" in nolane.text, nolane.text[-1500:]
        assert [p.name for p in bundles.iterdir()] == [name]  # the failed preview left nothing behind
        for page in (missing, ok, nolane):
            assert token not in page.text
    assert token not in console.stderr()


def test_console_shows_the_dot_text_when_graphviz_is_missing(
        start_console: Callable[..., Console], fed_pipeline: Callable[..., tuple[RunningPipeline, Feeder]],
        tmp_path: Path) -> None:
    spec = _chain(tmp_path)
    fed_pipeline(spec, lambda i: f"m{i}", 1)
    console = start_console(env={"PATH": str(Path(sys.executable).parent)})  # no `dot` on it
    with httpx.Client(base_url=console.url, timeout=10) as client:
        page = client.get("/p/chain")
    assert page.status_code == 200
    assert "No drawing: graphviz&#x27;s `dot` is not on PATH" in page.text
    assert '<pre class="dot"><code>// sha256:' in page.text and "<svg" not in page.text


def test_console_stops_on_sigterm_while_a_page_is_streaming(
        start_console: Callable[..., Console], fed_pipeline: Callable[..., tuple[RunningPipeline, Feeder]],
        tmp_path: Path) -> None:
    fed_pipeline(_chain(tmp_path), lambda i: f"m{i}", 1)
    console = start_console()
    with httpx.Client(base_url=console.url, timeout=10) as client, client.stream("GET", "/events") as stream:
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith("event: update"))
        console.proc.send_signal(signal.SIGTERM)
        assert console.proc.wait(timeout=10) == 0


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--listen=nonsense"], {}, "--listen: 'nonsense' is not HOST:PORT"),
    (["--listen=127.0.0.1:99999"], {}, "the port must be 0..65535"),
    (["--token-env=CONSOLE_TEST_UNSET"], {}, "$CONSOLE_TEST_UNSET is not set or empty"),
    (["--token-env=CONSOLE_TEST_SHORT"], {"CONSOLE_TEST_SHORT": "short"}, "at least 16 characters"),
    (["--root=/nonexistent/byteor"], {}, "--root=/nonexistent/byteor: not a directory"),
])
def test_console_refuses_bad_options(cli: CliRunner, args: list[str], env: dict[str, str], message: str) -> None:
    proc = cli("console", *args, env=env, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_console_refuses_an_address_in_use(cli: CliRunner, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = cli("console", f"--listen=127.0.0.1:{port}", f"--root={tmp_path}", timeout=30)
    assert proc.returncode == 2 and "cannot listen: Address already in use" in proc.stderr, proc.stderr


def test_dot_notes_add_a_line_to_a_node_and_leave_byteor_dot_unchanged() -> None:
    spec = load_spec_file(EXAMPLES / "chain.kv")
    plain = to_dot(spec)
    noted = to_dot(spec, {"s1": "lag 3 · 2/s"})
    assert to_dot(spec, {}) == plain and noted != plain
    assert '"s1" [label="1: bump\\nadd_u8 +1\\nlag 3 · 2/s"' in noted
    assert noted.replace("\\nlag 3 · 2/s", "") == plain
