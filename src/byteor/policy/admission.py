"""What may run at all, before any posture or approval: stage-key parsing and the operator allowlists.

Both action families are parsed here once, from the stage key alone, with no I/O:

* ``http_post:<url>``: the URL must be http or https, have a host, no userinfo and no dot segments.
  ``BYTEOR_HTTP_POST_ALLOWLIST`` (comma-separated URLs) restricts the targets. Entries are matched
  on the *parsed* target: same scheme, same host (exact, case folded), same effective port, and the
  target path equal to the entry's path or below it at a ``/`` boundary. So ``https://a.example.com``
  admits ``https://a.example.com/x`` but neither ``https://a.example.com.evil.net`` nor
  ``https://a.example.com:8443``, and ``https://h/api`` does not admit ``https://h/apix``.
* ``exec:PROGRAM|ARG|...``: split on ``|`` (no quoting, no shell), no NUL, a non-empty program listed
  exactly in ``BYTEOR_EXEC_ALLOWLIST`` (comma-separated; exec is off when it is unset).

:func:`admission` turns both into one answer: ``None`` (admitted) or the reason for a ``Deny``. The
policy gate calls it for every action stage; the actions call the same parsers when they resolve.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from .._errors import UsageError

__all__ = [
    "EXEC_ALLOWLIST_ENV",
    "EXEC_PREFIX",
    "HTTP_POST_ALLOWLIST_ENV",
    "HTTP_POST_PREFIX",
    "ExecCmd",
    "TargetUrl",
    "action_family",
    "admission",
    "allowlist_from_env",
    "exec_allowlist",
    "parse_exec_key",
    "parse_target_url",
    "url_admitted",
]

HTTP_POST_PREFIX = "http_post:"
EXEC_PREFIX = "exec:"
HTTP_POST_ALLOWLIST_ENV = "BYTEOR_HTTP_POST_ALLOWLIST"
EXEC_ALLOWLIST_ENV = "BYTEOR_EXEC_ALLOWLIST"
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
    raw = env.get(HTTP_POST_ALLOWLIST_ENV, "")
    entries = [e.strip() for e in raw.split(",") if e.strip()]
    if not entries:
        return None
    out = []
    for i, entry in enumerate(entries):
        try:
            parsed = parse_target_url(entry, what=f"{HTTP_POST_ALLOWLIST_ENV} entry {i + 1}")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if parsed.has_query or "#" in entry:
            raise UsageError(f"{HTTP_POST_ALLOWLIST_ENV} entry {i + 1} must not have a query or fragment")
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


@dataclass(frozen=True, slots=True)
class ExecCmd:
    program: str
    args: tuple[str, ...]

    @property
    def argv(self) -> list[str]:
        return [self.program, *self.args]


def parse_exec_key(key: str) -> ExecCmd:
    """``exec:PROGRAM|ARG|...`` to :class:`ExecCmd`; ``ValueError`` on an empty key, a NUL or an
    empty program."""
    body = key[len(EXEC_PREFIX):] if key.startswith(EXEC_PREFIX) else key
    if not body:
        raise ValueError("exec stage key names no program")
    if "\x00" in body:
        raise ValueError("exec stage key contains a NUL character")
    program, *args = body.split("|")
    if not program:
        raise ValueError("exec stage key has an empty program")
    return ExecCmd(program, tuple(args))


def exec_allowlist(env: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """The allowed PROGRAM strings, or ``None`` when ``BYTEOR_EXEC_ALLOWLIST`` is unset or empty
    (exec disabled). Entries are compared exactly, after trimming the spaces around each comma."""
    env = os.environ if env is None else env
    entries = frozenset(e.strip() for e in env.get(EXEC_ALLOWLIST_ENV, "").split(",") if e.strip())
    return entries or None


def action_family(key: str) -> str | None:
    if key.startswith(HTTP_POST_PREFIX):
        return "http_post"
    if key.startswith(EXEC_PREFIX):
        return "exec"
    return None


def admission(key: str, env: Mapping[str, str] | None = None) -> str | None:
    """Why ``key`` is refused before any policy applies (a Deny reason), or ``None`` when admitted.

    A malformed key (not http(s), userinfo, dot segments, NUL, empty program) and a target the
    allowlist does not admit are both refusals: the stage may never run, whatever the posture.
    Raises :class:`~byteor.UsageError` when an allowlist variable itself is malformed.
    """
    env = os.environ if env is None else env
    fam = action_family(key)
    try:
        if fam == "http_post":
            target = parse_target_url(key[len(HTTP_POST_PREFIX):])
            allow = allowlist_from_env(env)
            if not url_admitted(target, allow):
                return f"{target.display} is not admitted by {HTTP_POST_ALLOWLIST_ENV}"
            return None
        if fam == "exec":
            cmd = parse_exec_key(key)
            programs = exec_allowlist(env)
            if programs is None:
                return f"exec is disabled: {EXEC_ALLOWLIST_ENV} is not set"
            if cmd.program not in programs:
                return f"program {cmd.program!r} is not listed in {EXEC_ALLOWLIST_ENV}"
            return None
    except UsageError:  # a malformed allowlist variable is the operator's usage error (exit 2)
        raise
    except ValueError as exc:
        return str(exc)
    return "not an action stage key (expected http_post:<url> or exec:PROGRAM|ARG|...)"
