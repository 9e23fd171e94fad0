"""The console's ASGI app (starlette) and its server (uvicorn).

Pages are GET and only read. The two writes, ``POST /p/<id>/bundle`` and ``POST /p/<id>/replay``,
need the token the console was started with, as ``Authorization: Bearer <token>`` or a ``token``
form field; it is compared in constant time (hashes of equal length), never logged, never written
into a page. Without a configured token every write is refused (403); without a token in the
request, 401; with a wrong one, 403; a cross-site POST (``Origin`` or ``Sec-Fetch-Site``) is 403.

Every response carries a strict Content-Security-Policy (only this origin's script and style sheet;
no inline script or style, no framing, forms post only here), ``X-Frame-Options: DENY``,
``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and ``Cache-Control:
no-store``. A request whose ``Host`` is not one of the console's own names is 400 (a page of
another site cannot read the console by rebinding a DNS name to 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import threading
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._errors import ByteorError, UsageError
from ..obs import events
from ..obs.redact import mask
from ..runtime.observe import SHM_ROOT
from ..runtime.session_state import read_session_state
from . import _evidence as evidence
from . import _views as views
from ._live import list_figures, pipeline_figures
from ._topology import Topology, build_topology
from ._watch import Pipelines, Sample, Watch

__all__ = ["DEFAULT_BUNDLE_DIR", "SECURITY_HEADERS", "ConsoleConfig", "create_app", "serve"]

DEFAULT_BUNDLE_DIR = "/var/tmp/byteor/bundles"
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: How often a page's figures are sent.
EVENT_INTERVAL_S = 1.0
_MAX_FORM_BYTES = 16 * 1024

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ConsoleConfig:
    """``root``: where running pipelines keep their files; ``bundle_dir``: where bundles are written;
    ``token``: what writes need (None: writes are off); ``token_env``: the variable it came from
    (named on pages, never its value); ``hosts``: the ``Host`` names accepted (None: any)."""

    root: str = SHM_ROOT
    bundle_dir: str = DEFAULT_BUNDLE_DIR
    token: str | None = None
    token_env: str | None = None
    hosts: frozenset[str] | None = frozenset(_LOOPBACK_NAMES)

    @property
    def writes(self) -> str:
        if self.token is None:
            return "Read-only: started without --token-env, so writes (bundles, replay previews) are refused."
        return (f"Read-only pages. Writes (bundles, replay previews) need the token held by ${self.token_env} "
                "when the console started.")


class _Security:
    """Pure ASGI middleware: the Host check and the security headers on every response."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.hosts is not None:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if _host_name(host) not in self.hosts:
                response = PlainTextResponse("invalid Host header: this console answers to its own address only",
                                             status_code=400)
                await _with_headers(response)(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS]
                headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _with_headers(response: Response) -> Response:
    for key, value in SECURITY_HEADERS:
        response.headers[key] = value
    response.headers["cache-control"] = "no-store"
    return response


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if ":" in host else host


def _status(exc: ByteorError) -> int:
    return {2: 400, 3: 422, 4: 403}.get(exc.exit_code, 500)


class _Console:
    """The app's state and endpoints."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.pipelines = Pipelines(config.root)
        self.stopping = threading.Event()
        self._topologies: dict[str, Topology | None] = {}
        self._digest = hashlib.sha256(config.token.encode("utf-8")).digest() if config.token else None

    # -- helpers --------------------------------------------------------------------------------------

    def page(self, status: int, title: str, message: str, back: str | None = "/") -> HTMLResponse:
        return HTMLResponse(views.error_page(status, title, message, writes=self.config.writes, back=back),
                            status_code=status)

    def watch(self, request: Request) -> Watch:
        watch = self.pipelines.get(str(request.path_params["ident"]))
        if watch is None:
            raise HTTPException(404, "no pipeline of that name is running here (it may have ended)")
        return watch

    async def topology(self, spec: Any) -> Topology | None:
        if spec is None:
            return None
        from ..spec.kv import spec_hash

        key = spec_hash(spec)
        if key not in self._topologies:
            self._topologies[key] = await run_in_threadpool(build_topology, spec)
        return self._topologies[key]

    def raw_session(self, watch: Watch) -> dict[str, Any]:
        """The run's session state as written (unmasked: the bundle needs the real spec and paths);
        never shown."""
        try:
            raw = read_session_state(watch.path)
        except ByteorError as exc:
            raise HTTPException(409, f"cannot read the pipeline's session state: {exc}") from None
        if raw is None:
            raise HTTPException(404, "the pipeline has ended")
        return raw

    async def authorize(self, request: Request, form: dict[str, str]) -> Response | None:
        """None when the request may write, else the refusal page."""
        # Browsers say where a request comes from. Origin is "null" for a form under Referrer-Policy
        # no-referrer (ours), so Sec-Fetch-Site decides then; clients without either need the token.
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        if site not in (None, "same-origin", "none") or (
                origin not in (None, "null") and origin != f"{request.url.scheme}://{request.headers.get('host', '')}"):
            return self.page(403, "Refused", "a write from another site is refused")
        if self._digest is None:
            return self.page(403, "Refused: writes are turned off",
                             "this console was started without --token-env, so it only shows; restart it with "
                             "--token-env=NAME (NAME holding the token) to write bundles and replay previews")
        given = None
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        elif form.get("token"):
            given = form["token"]
        if not given:
            response = self.page(401, "Refused: the token is needed",
                                 "this action writes files, so it needs the console token (the token field of the "
                                 "form, or an Authorization: Bearer header)")
            response.headers["www-authenticate"] = 'Bearer realm="byteor console"'
            return response
        if not hmac.compare_digest(hashlib.sha256(given.encode("utf-8")).digest(), self._digest):
            await asyncio.sleep(0.2)  # slows a guesser down; the token is long enough not to be guessed
            return self.page(403, "Refused: wrong token", "the token given does not match the console's token")
        return None

    @staticmethod
    async def form(request: Request) -> dict[str, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM_BYTES:
                raise HTTPException(413, "the form is too large")
        if not body:
            return {}
        if ctype != "application/x-www-form-urlencoded":
            raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
        pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v for k, v in pairs}

    # -- pages ---------------------------------------------------------------------------------------

    async def sampled(self) -> list[tuple[Watch, Sample]]:
        """Every pipeline under the root with its sample; one whose files cannot be read (another
        user's, half removed) is left out of the list rather than failing it."""
        out = []
        for watch in self.pipelines.scan():
            with contextlib.suppress(ByteorError, OSError):
                out.append((watch, await run_in_threadpool(watch.sample)))
        return out

    async def index(self, request: Request) -> Response:
        rows = await self.sampled()
        fig = list_figures([sample for _watch, sample in rows])
        return HTMLResponse(views.list_page(rows, fig, root=self.pipelines.root, writes=self.config.writes))

    async def list_events(self, request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            while not self.stopping.is_set():
                rows = await self.sampled()
                payload = {**list_figures([sample for _watch, sample in rows]).to_json(),
                           "pipelines": [watch.id for watch, _sample in rows]}
                yield f"event: update\ndata: {json.dumps(payload)}\n\n"
                await self._pause()

        return _event_stream(stream())

    async def pipeline(self, request: Request) -> Response:
        watch = self.watch(request)
        sample = await run_in_threadpool(watch.sample)
        session = sample.obs["session"]
        spec = evidence.spec_of(session, watch.path)
        topo = await self.topology(spec)
        fig = pipeline_figures(sample, topo.nodes if topo else (), spec)
        raw = self.raw_session(watch)
        redrive = await run_in_threadpool(evidence.redrive_preview, raw)
        bundles = evidence.list_bundles(self.config.bundle_dir, raw)
        return HTMLResponse(views.pipeline_page(
            watch, sample, fig, spec=spec, topo=topo, redrive=redrive, bundles=bundles,
            journal_lanes=evidence.journal_lanes(spec, raw), writes_enabled=self._digest is not None,
            writes=self.config.writes))

    async def pipeline_events(self, request: Request) -> Response:
        watch = self.watch(request)

        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            sample = await run_in_threadpool(watch.sample)
            spec = evidence.spec_of(sample.obs["session"], watch.path)
            topo = await self.topology(spec)
            nodes = topo.nodes if topo else ()
            while not self.stopping.is_set():
                if not sample.running:
                    yield "event: ended\ndata: {}\n\n"
                    return
                yield f"event: update\ndata: {json.dumps(pipeline_figures(sample, nodes, spec).to_json())}\n\n"
                await self._pause()
                sample = await run_in_threadpool(watch.sample)

        return _event_stream(stream())

    async def _pause(self) -> None:
        for _ in range(int(EVENT_INTERVAL_S / 0.1)):
            if self.stopping.is_set():
                return
            await asyncio.sleep(0.1)

    async def dot(self, request: Request) -> Response:
        watch = self.watch(request)
        sample = await run_in_threadpool(watch.sample)
        spec = evidence.spec_of(sample.obs["session"], watch.path)
        if spec is None:
            raise HTTPException(404, "this run's session state does not carry its spec")
        from ..spec.dot import to_dot

        return PlainTextResponse(to_dot(spec), media_type="text/vnd.graphviz")

    async def dead_letter(self, request: Request) -> Response:
        watch = self.watch(request)
        raw = self.raw_session(watch)
        preview = await run_in_threadpool(evidence.redrive_preview, raw)
        return HTMLResponse(views.redrive_page(watch, mask(str(raw["name"])), preview, writes=self.config.writes))

    # -- writes --------------------------------------------------------------------------------------

    async def bundle(self, request: Request) -> Response:
        watch = self.watch(request)
        refused = await self.authorize(request, await self.form(request))
        if refused is not None:
            return refused
        raw = self.raw_session(watch)
        sample = await run_in_threadpool(watch.sample)
        journals = {str(j["lane"]): str(j["path"]) for j in sample.obs.get("journals") or []}
        try:
            path = await run_in_threadpool(evidence.write_bundle, watch.path, raw, journals, self.config.bundle_dir)
        except ByteorError as exc:
            return self.page(_status(exc), "The bundle could not be written", str(exc), back=f"/p/{watch.id}")
        events.emit("console.bundle", f"console: wrote incident bundle {path}", name=raw.get("name"),
                    path=str(path))
        return FileResponse(path, media_type="application/gzip", filename=path.name)

    async def replay(self, request: Request) -> Response:
        watch = self.watch(request)
        form = await self.form(request)
        refused = await self.authorize(request, form)
        if refused is not None:
            return refused
        raw = self.raw_session(watch)
        back = f"/p/{watch.id}"
        name = form.get("bundle", "")
        if name not in evidence.list_bundles(self.config.bundle_dir, raw):
            return self.page(400, "No such bundle", f"{name!r} is not a bundle of this pipeline in "
                                                   f"{self.config.bundle_dir}", back=back)
        lane = form.get("journal_lane", "").strip()
        try:
            last_n = int(form.get("last_n", ""))
        except ValueError:
            last_n = 0
        if not lane:
            return self.page(400, "No journal lane", "name the journal lane to replay", back=back)
        if not 1 <= last_n <= evidence.MAX_PREVIEW_RECORDS:
            return self.page(400, "Bad number of records",
                             f"last records must be 1..{evidence.MAX_PREVIEW_RECORDS}", back=back)
        bundle = os.path.join(self.config.bundle_dir, name)
        try:
            result = await run_in_threadpool(evidence.replay_preview, bundle, lane, last_n,
                                             str(raw.get("posture") or "dev"))
        except ByteorError as exc:
            return self.page(_status(exc), "The replay preview failed", str(exc), back=back)
        return HTMLResponse(views.replay_page(watch, mask(str(raw["name"])), name, result,
                                              writes=self.config.writes))

    # -- errors --------------------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {404: "Not found", 405: "Method not allowed", 409: "Conflict", 413: "Too large",
                  415: "Unsupported form"}
        response = self.page(exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail))
        if exc.status_code == 405:
            response.headers["allow"] = "POST"
        return response


def _event_stream(body: AsyncIterator[str]) -> StreamingResponse:
    async def guarded() -> AsyncIterator[str]:
        try:
            async for chunk in body:
                yield chunk
        except Exception as exc:  # the page shows "connection lost" and retries; no traceback here
            events.emit("console.error", f"console: an event stream failed: {exc}", level="error")

    return StreamingResponse(guarded(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


def _guarded(handler: Callable[[Request], Awaitable[Response]], console: _Console) -> Callable[
        [Request], Awaitable[Response]]:
    """A handler whose unexpected failure is a page with one line, never a traceback."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPException:
            raise
        except Exception as exc:
            events.emit("console.error", f"console: {request.method} {request.url.path} failed: {exc}",
                        level="error")
            return console.page(500, "Something went wrong", f"{type(exc).__name__}: {exc}")

    return run


def create_app(config: ConsoleConfig) -> Starlette:
    """The console's ASGI application for ``config``."""
    console = _Console(config)

    def route(path: str, handler: Callable[[Request], Awaitable[Response]], methods: list[str] | None = None
              ) -> Route:
        return Route(path, _guarded(handler, console), methods=methods or ["GET"])

    app = Starlette(routes=[
        route("/", console.index),
        route("/events", console.list_events),
        route("/p/{ident}", console.pipeline),
        route("/p/{ident}/events", console.pipeline_events),
        route("/p/{ident}/dot", console.dot),
        route("/p/{ident}/dead-letter", console.dead_letter),
        route("/p/{ident}/bundle", console.bundle, ["POST"]),
        route("/p/{ident}/replay", console.replay, ["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ], exception_handlers={HTTPException: console.http_error},
        middleware=[Middleware(_Security, hosts=config.hosts)])
    app.state.console = console
    return app


class _Server:
    """uvicorn's server with the console's signal handling: SIGINT or SIGTERM ends the streams and
    the server, and the command exits 0 (uvicorn would re-raise the signal after shutting down)."""

    def __init__(self, app: Starlette) -> None:
        import uvicorn

        console: _Console = app.state.console
        config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning", access_log=False,
                                server_header=False, timeout_graceful_shutdown=3, proxy_headers=False)

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                def stop(signum: int, frame: object) -> None:
                    console.stopping.set()
                    self.should_exit = True

                previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

        self.server = Server(config)
        self.console = console

    def run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[sock]))
        finally:
            self.console.stopping.set()
            self.console.pipelines.close()


def serve(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on the bound socket ``sock`` until SIGINT or SIGTERM."""
    if not isinstance(getattr(app.state, "console", None), _Console):
        raise UsageError("serve() takes an app made by create_app()")
    _Server(app).run(sock)
