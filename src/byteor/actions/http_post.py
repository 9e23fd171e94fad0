"""``http_post:<url>``: POST the message bytes to a URL, with an idempotency key and retries.

Everything is parsed once when the stage resolves: the URL (http or https, a host, no userinfo, no
dot segments), the allowlist (``BYTEOR_HTTP_POST_ALLOWLIST``), the timeout
(``BYTEOR_HTTP_POST_TIMEOUT``, seconds, default 10) and the retry shape. Per message the stage only
hashes the bytes for ``Idempotency-Key: sha256:<hex>`` and posts them on one pooled keep-alive
``httpx.Client``.

Allowlist entries are URLs matched on the *parsed* target: same scheme, same host (exact, case
folded), same effective port, and the target path equal to the entry's path or below it at a ``/``
boundary. So ``https://a.example.com`` admits ``https://a.example.com/x`` but neither
``https://a.example.com.evil.net`` nor ``https://a.example.com:8443``, and ``https://h/api`` does
not admit ``https://h/apix``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from .._errors import ActionFailed, UsageError
from .retry import RetryConfig, env_number

__all__ = [
    "ALLOWLIST_ENV",
    "DEFAULT_TIMEOUT_S",
    "PREFIX",
    "TIMEOUT_ENV",
    "HttpPostAction",
    "TargetUrl",
    "allowlist_from_env",
    "idempotency_key",
    "parse_target_url",
    "url_admitted",
]

PREFIX = "http_post:"
ALLOWLIST_ENV = "BYTEOR_HTTP_POST_ALLOWLIST"
TIMEOUT_ENV = "BYTEOR_HTTP_POST_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
#: Response bodies are read (and discarded) up to this many bytes.
MAX_RESPONSE_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DOT_SEGMENT = re.compile(r"^(\.|%2e){1,2}$", re.IGNORECASE)
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True, slots=True)
class TargetUrl:
    """A parsed http(s) URL: what allowlists compare. ``url`` is the original text."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    has_query: bool

    @property
    def display(self) -> str:
        """The URL for logs and errors: the query (which may carry a token) is never shown."""
        return self.url.split("?", 1)[0] + ("?<redacted>" if self.has_query else "")


def parse_target_url(url: str, *, what: str = "http_post URL") -> TargetUrl:
    """Parse and check an http(s) URL; ``ValueError`` saying what is wrong (never echoing a query)."""
    if _BAD_CHARS.search(url):
        raise ValueError(f"{what} contains whitespace, a control character or a backslash")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{what} must start with http:// or https://")
    if "@" in parts.netloc:
        raise ValueError(f"{what} must not carry userinfo (user@host)")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"{what} has no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"{what} has an invalid port") from None
    path = parts.path or "/"
    if any(_DOT_SEGMENT.match(seg) for seg in path.split("/")):
        raise ValueError(f"{what} path has . or .. segments")
    # Defence against parser differentials: the HTTP client must see the same origin we checked.
    try:
        seen = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise ValueError(f"{what} is not a valid URL") from None
    if (seen.scheme, seen.host.lower(), seen.port or _DEFAULT_PORTS[scheme]) != (scheme, host, port):
        raise ValueError(f"{what} is ambiguous (parsers disagree on its origin)")
    return TargetUrl(url, scheme, host, port, path, bool(parts.query))


def allowlist_from_env(env: Mapping[str, str] | None = None) -> tuple[TargetUrl, ...] | None:
    """The parsed allowlist, or ``None`` when the variable is unset or empty (everything admitted).
    A malformed entry is a :class:`UsageError` naming the variable and the entry's position."""
    env = os.environ if env is None else env
    raw = env.get(ALLOWLIST_ENV, "")
    entries = [e.strip() for e in raw.split(",") if e.strip()]
    if not entries:
        return None
    out = []
    for i, entry in enumerate(entries):
        try:
            parsed = parse_target_url(entry, what=f"{ALLOWLIST_ENV} entry {i + 1}")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if parsed.has_query or "#" in entry:
            raise UsageError(f"{ALLOWLIST_ENV} entry {i + 1} must not have a query or fragment")
        out.append(parsed)
    return tuple(out)


def _path_within(path: str, prefix: str) -> bool:
    base = prefix.rstrip("/")
    return base in ("", path) or path.startswith(base + "/")


def url_admitted(target: TargetUrl, allowlist: tuple[TargetUrl, ...] | None) -> bool:
    """Whether ``target`` is admitted: no allowlist admits all; else one entry must match exactly on
    scheme, host and port, with the path at or below the entry's path on a ``/`` boundary."""
    if allowlist is None:
        return True
    return any(
        target.scheme == e.scheme and target.host == e.host and target.port == e.port
        and _path_within(target.path, e.path)
        for e in allowlist
    )


def idempotency_key(data: bytes | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class HttpPostAction:
    """One resolved ``http_post`` target with its pooled client. Thread-safe; call :meth:`close`."""

    family = "http_post"

    def __init__(self, key: str, target: TargetUrl, *, timeout: float, retry: RetryConfig) -> None:
        self.key = key
        self.target = target
        self.retry = retry
        self.timeout = timeout
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # a redirect could leave the allowlisted origin
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            headers={"Content-Type": "application/octet-stream", "User-Agent": "byteor-actions"},
        )
        self._url = target.url

    @classmethod
    def from_key(cls, key: str, env: Mapping[str, str] | None = None) -> HttpPostAction:
        env = os.environ if env is None else env
        target = parse_target_url(key[len(PREFIX):])
        timeout = env_number(env, TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        if timeout <= 0:
            raise UsageError(f"{TIMEOUT_ENV} must be > 0")
        return cls(key, target, timeout=timeout, retry=RetryConfig.from_env(env))

    def perform(self, data: bytes, ikey: str | None = None) -> None:
        """POST ``data`` until it is accepted (2xx). Retries transport errors, 429 and 5xx with
        exponential backoff; anything else, or running out of retries, raises :class:`ActionFailed`."""
        headers = {"Idempotency-Key": ikey or idempotency_key(data)}
        attempt = 0
        while True:
            try:
                status = self._post_once(data, headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__} posting to {self.target.display}"
                retryable = True
            else:
                if 200 <= status < 300:
                    return
                problem = f"HTTP {status} from {self.target.display}"
                retryable = _retryable_status(status)
            if not retryable or attempt >= self.retry.max_retries:
                tries = attempt + 1
                raise ActionFailed(f"{problem} (after {tries} attempt{'s' if tries > 1 else ''})")
            time.sleep(self.retry.delay(attempt))
            attempt += 1

    def _post_once(self, data: bytes, headers: dict[str, str]) -> int:
        # The response body is drained (so the connection can be reused) up to a bound; a target
        # that answers with more is not read further and its connection is dropped instead.
        with self._client.stream("POST", self._url, content=data, headers=headers) as resp:
            seen = 0
            for chunk in resp.iter_raw():
                seen += len(chunk)
                if seen > MAX_RESPONSE_BYTES:
                    break
            return resp.status_code

    def close(self) -> None:
        self._client.close()
