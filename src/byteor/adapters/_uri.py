"""Endpoint URIs: ``scheme://[USER[:PASS]@]HOST:PORT[,HOST:PORT]/NAME?param=value&...``, ``-`` and
``file:PATH?format=...``, parsed once into an :class:`Endpoint`.

Credentials come from the URI's userinfo or, when it has none, from ``BYTEOR_<SCHEME>_USERNAME`` /
``BYTEOR_<SCHEME>_PASSWORD`` (scheme upper-cased, ``-`` as ``_``: ``BYTEOR_RABBITMQ_STREAM_PASSWORD``).
They are kept on the endpoint for the client and never shown: :attr:`Endpoint.display` and
:func:`redact_uri` are what logs, summaries, snapshots, bundles and errors carry.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from .._errors import UsageError
from .._redact import mask_secrets
from .._redact import scrub as _scrub

__all__ = ["DEFAULT_PORTS", "Endpoint", "parse_uri", "redact_uri", "scrub"]

REDACTED = "<redacted>"
DEFAULT_PORTS = {"kafka": 9092, "nats": 4222, "redis": 6379, "rabbitmq-stream": 5552, "mqtt": 1883, "grpc": 50051,
                 "postgresql": 5432, "s3": 443, "http": 80, "https": 443, "ws": 80}
#: schemes whose endpoint is the address alone (a server byteor runs): no NAME after it
ADDRESS_ONLY = frozenset({"grpc"})
#: schemes whose path may be empty (an S3 prefix: the whole bucket; an HTTP or WebSocket path: ``/``)
_OPTIONAL_NAME = frozenset({"s3", "http", "https", "ws"})
#: schemes whose empty host means 127.0.0.1 (a server byteor runs binds it)
_WEB = ("http", "https", "ws")


def redact_uri(text: str) -> str:
    """``text`` with every URL userinfo and credential-named query parameter value (and every known
    secret value of the environment) replaced by ``<redacted>``: :mod:`byteor._redact`'s rules."""
    return _scrub(text)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """A vendor's message made safe to show: URIs redacted, every known secret value masked."""
    return mask_secrets(_scrub(text), [s for s in secrets if s])


@dataclass(frozen=True)
class Endpoint:
    """One parsed binding. ``name`` is the topic, subject, stream or file path; ``params`` the
    query parameters (every one must be consumed by the adapter, see :meth:`take`)."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    name: str
    params: Mapping[str, str]
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    display: str = ""
    label: str = ""

    @property
    def address(self) -> str:
        if self.scheme == "s3":  # the "host" is a bucket; the store is ?endpoint= (or AWS)
            return f"bucket {self.hosts[0][0]} at {redact_uri(self.params.get('endpoint') or 'AWS S3')}"
        return ",".join(f"{h}:{p}" for h, p in self.hosts)

    @property
    def secrets(self) -> tuple[str | None, ...]:
        return (self.password,)

    def scrub(self, text: object) -> str:
        return scrub(str(text), self.secrets)

    def param(self, key: str, default: str | None = None) -> str | None:
        return self.params.get(key, default)

    def check_params(self, allowed: Iterable[str]) -> None:
        """Refuse (exit 2) a parameter this adapter does not know, naming it."""
        known = set(allowed) | {"retry_for", "connect_timeout"}
        for key in self.params:
            if key not in known:
                raise UsageError(f"{self.label} {self.display}: unknown parameter {key!r} for {self.scheme}:// "
                                 f"(known: {', '.join(sorted(known))})")
        _ = self.retry_for, self.connect_timeout  # a bad number is refused before anything connects

    def require(self, key: str) -> str:
        value = self.params.get(key)
        if not value:
            raise UsageError(f"{self.label} {self.display}: {self.scheme}:// needs ?{key}=...")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.params.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not value >= minimum:  # also refuses NaN
            raise UsageError(f"{self.label} {self.display}: ?{key}= must be a number >= {minimum:g}, got {raw!r}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        raw = self.params.get(key)
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) < minimum:
            raise UsageError(f"{self.label} {self.display}: ?{key}= must be an integer >= {minimum}, got {raw!r}")
        return int(raw)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.params.get(key, default)
        if value not in choices:
            raise UsageError(f"{self.label} {self.display}: ?{key}= must be one of {'|'.join(choices)}, got {value!r}")
        return value

    @property
    def retry_for(self) -> float:
        """How long the broker may stay unreachable during a run before it fails (default 60 s)."""
        return self.number("retry_for", 60.0, minimum=0.1)

    @property
    def connect_timeout(self) -> float:
        """How long the first connection may take before the run fails at start (default 10 s)."""
        return self.number("connect_timeout", 10.0, minimum=0.1)


def _env_credentials(scheme: str) -> tuple[str | None, str | None]:
    base = "BYTEOR_" + scheme.upper().replace("-", "_")
    return os.environ.get(base + "_USERNAME") or None, os.environ.get(base + "_PASSWORD") or None


def parse_uri(text: str, label: str = "--ingress") -> Endpoint:
    """Parse one binding (exit 2 naming ``label`` and the redacted URI when it does not parse)."""
    shown = redact_uri(text)
    if text == "-":
        return Endpoint("-", (), "-", {}, display="-", label=label)
    if text.startswith("file:"):
        rest = text[len("file:"):]
        path, _, query = rest.partition("?")
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise UsageError(f"{label} {shown}: file: needs a path (file:PATH?format=...)")
        return Endpoint("file", (), unquote(path), dict(parse_qsl(query, keep_blank_values=True)), display=shown,
                        label=label)
    try:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
    except ValueError as exc:
        raise UsageError(f"{label} {shown}: not a URI ({exc})") from None
    if not scheme or "://" not in text:
        raise UsageError(f"{label} {shown}: not a URI; expected SCHEME://HOST:PORT/NAME, - or file:PATH "
                         f"(schemes: {', '.join(DEFAULT_PORTS)})")
    if scheme not in DEFAULT_PORTS:
        raise UsageError(f"{label} {shown}: unknown scheme {scheme!r} (known: {', '.join(DEFAULT_PORTS)}, "
                         "file:, -)")
    netloc = parts.netloc
    userinfo, at, hostlist = netloc.rpartition("@")
    if not at:
        hostlist, userinfo = netloc, ""
    username = password = None
    if userinfo:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    env_user, env_password = _env_credentials(scheme)  # what the URI does not give comes from the environment
    username = username if username is not None else env_user
    password = password if password is not None else env_password
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        if not item:
            raise UsageError(f"{label} {shown}: missing HOST:PORT")
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon:
            host, port = item, str(DEFAULT_PORTS[scheme])
        host = host.strip("[]")
        if not host and scheme in _WEB:
            host = "127.0.0.1"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"{label} {shown}: bad HOST:PORT {redact_uri(item)!r}")
        hosts.append((host, int(port)))
    name = unquote(parts.path.lstrip("/"))
    if not name and scheme not in ADDRESS_ONLY | _OPTIONAL_NAME:
        what = {"kafka": "TOPIC", "nats": "SUBJECT", "redis": "STREAM", "rabbitmq-stream": "STREAM",
                "mqtt": "TOPIC", "postgresql": "DATABASE"}[scheme]
        raise UsageError(f"{label} {shown}: missing /{what} after the address")
    if "#" in text:
        raise UsageError(f"{label} {shown}: '#' starts a URI fragment; write an MQTT '#' wildcard as %23")
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in params:
            raise UsageError(f"{label} {shown}: parameter {key!r} given twice")
        params[key] = value
    return Endpoint(scheme, tuple(hosts), name, params, username, password, display=shown, label=label)
