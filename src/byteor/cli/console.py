"""Verb ``console``: a local web page over the pipelines running on this host (:mod:`byteor.console`).

``byteor console [--listen=127.0.0.1:8642] [--token-env=NAME] [--root=DIR] [--bundle-dir=DIR]``
serves until SIGINT or SIGTERM (exit 0). It binds 127.0.0.1 unless told otherwise and only reads;
writes (incident bundles, replay previews) need the token held by the environment variable
``--token-env`` names. Exit 2 for a bad address, an address in use, an unset or short token, or a
missing ``console`` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket

from .._errors import UsageError
from ..obs import events
from ..runtime.observe import SHM_ROOT

__all__ = ["MIN_TOKEN_CHARS", "configure", "run"]

DEFAULT_LISTEN = "127.0.0.1:8642"
MIN_TOKEN_CHARS = 16
_WILDCARDS = ("0.0.0.0", "::")


def configure(parser: argparse.ArgumentParser, verb_name: str) -> None:
    from ..console import DEFAULT_BUNDLE_DIR

    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"where to serve (default {DEFAULT_LISTEN}; port 0 picks a free one; another "
                             "address than loopback exposes the pages, unencrypted, to whoever can reach it)")
    parser.add_argument("--token-env", metavar="NAME",
                        help="the environment variable holding the token that writes (incident bundles, replay "
                             f"previews) need, at least {MIN_TOKEN_CHARS} characters; without it the console "
                             "only shows")
    parser.add_argument("--root", default=SHM_ROOT, metavar="DIR",
                        help=f"where running pipelines keep their ring and lane directories (default {SHM_ROOT})")
    parser.add_argument("--bundle-dir", default=DEFAULT_BUNDLE_DIR, metavar="DIR",
                        help=f"where incident bundles are written (default {DEFAULT_BUNDLE_DIR})")


def _token(name: str | None) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name, "")
    if not value:
        raise UsageError(f"--token-env={name}: ${name} is not set or empty")
    if len(value) < MIN_TOKEN_CHARS or any(c.isspace() for c in value):
        raise UsageError(f"--token-env={name}: the token in ${name} must be at least {MIN_TOKEN_CHARS} characters "
                         "without spaces (e.g. `openssl rand -hex 24`)")
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int, text: str) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--listen={text}: cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"--listen={text}: cannot listen: {exc.strerror}") from None
    return sock


def run(args: argparse.Namespace) -> int:
    from ..obs.metrics import parse_listen

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    token = _token(args.token_env)
    if not os.path.isdir(args.root):
        raise UsageError(f"--root={args.root}: not a directory")
    try:
        from ..console import ConsoleConfig, create_app, serve
    except ImportError as exc:  # the extra is not installed: say which, not a traceback
        raise UsageError(f"the console needs the `console` extra ({exc.name} is missing): "
                         "pip install 'byteor[console]'") from None

    loopback = ("127.0.0.1", "localhost", "::1")
    hosts: frozenset[str] | None = frozenset(loopback) if _loopback(host) else (
        None if host in _WILDCARDS else frozenset({host, *loopback}))
    sock = _bind(host, port, args.listen)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    url = f"http://{shown}:{bound[1]}/"
    if not _loopback(host):
        events.emit("console.exposed", f"console: listening on {args.listen}, not only on this host: the pages "
                    "(and a token typed into them) travel unencrypted to whoever can reach it", level="warning")
    mode = (f"writes need the token in ${args.token_env}" if token is not None
            else "read-only (no --token-env: writes are refused)")
    events.emit("console.listening", f"console on {url} ({mode}); pipelines under {args.root}; Ctrl-C stops it",
                address=f"{shown}:{bound[1]}", url=url)
    config = ConsoleConfig(root=args.root, bundle_dir=os.path.abspath(args.bundle_dir), token=token,
                           token_env=args.token_env, hosts=hosts)
    serve(create_app(config), sock)
    events.emit("console.stopped", "console stopped", text=False)
    return 0
