"""What may run at all, before any posture or approval: stage-key parsing and the operator allowlists.

Both action families are parsed here once, from the stage key alone, with no I/O:

* ``http_post:<url>``: the URL must be http or https, have a host, no userinfo, no dot segments and
  no encoded separators (``%2F``, ``%5C``, ``%00``, or a segment that decodes to ``.``/``..``).
  ``BYTEOR_HTTP_POST_ALLOWLIST`` (comma-separated URLs) restricts the targets; set, it must name at
  least one URL (a list of spaces or commas is a usage error, never "admit everything"). Entries
  are matched on the *parsed* target: same scheme, same host (exact, case folded), same effective
  port, and the target path, normalised (unreserved characters percent-decoded, other escapes upper
  case), equal to the entry's path or below it at a ``/`` boundary. So ``https://a.example.com``
  admits ``https://a.example.com/x`` but neither ``https://a.example.com.evil.net`` nor
  ``https://a.example.com:8443``, and ``https://h/api`` does not admit ``https://h/apix`` nor
  ``https://h/api/..%2fadmin``.
* ``exec:/ABSOLUTE/PROGRAM|ARG|...``: split on ``|`` (no quoting, no shell), no NUL, an absolute
  program path (never looked up on ``PATH`` or against the working directory) admitted by
  ``BYTEOR_EXEC_ALLOWLIST`` (comma-separated; exec is off when it is unset). An entry ``PROGRAM``
  admits that program with any arguments; an entry ``PROGRAM|ARG|...`` admits exactly that command.

Both families may name environment variables instead of writing secrets into the spec:
``{env:NAME}`` in an http_post URL's path or query, or in an exec argument, is replaced by the
variable's value when the stage resolves (percent-encoded in a URL). The spec, its hash, the audits
and every message keep the placeholder; a variable that is not set is a usage error.

:func:`admission` turns both into one answer: ``None`` (admitted) or the reason for a ``Deny``. The
policy gate calls it for every action stage; the actions call the same parsers when they resolve.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from .._errors import UsageError

__all__ = [
    "ENV_PLACEHOLDER",
    "EXEC_ALLOWLIST_ENV",
    "EXEC_PREFIX",
    "HTTP_POST_ALLOWLIST_ENV",
    "HTTP_POST_PREFIX",
    "ExecCmd",
    "TargetUrl",
    "action_family",
    "admission",
    "allowlist_from_env",
    "exec_admitted",
    "exec_allowlist",
    "exec_program_problem",
    "expand_env",
    "parse_exec_key",
    "parse_target_url",
    "url_admitted",
]

HTTP_POST_PREFIX = "http_post:"
#: ``{env:NAME}``: a value taken from the environment when the stage resolves.
ENV_PLACEHOLDER = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
EXEC_PREFIX = "exec:"
HTTP_POST_ALLOWLIST_ENV = "BYTEOR_HTTP_POST_ALLOWLIST"
EXEC_ALLOWLIST_ENV = "BYTEOR_EXEC_ALLOWLIST"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True, slots=True)
class TargetUrl:
    """A parsed http(s) URL: what allowlists compare. ``url`` is what is requested (placeholders
    replaced), ``template`` the text as written (placeholders kept), ``path`` the normalised path."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    has_query: bool
    template: str = ""

    @property
    def display(self) -> str:
        """The URL for logs and errors: the query (which may carry a token) is never shown, and
        placeholders are shown as written, never their values."""
        shown = self.template or self.url
        return shown.split("?", 1)[0] + ("?<redacted>" if self.has_query else "")


def _normal_path(path: str) -> str:
    """RFC 3986 6.2.2 normalisation: unreserved characters decoded, other escapes in upper case."""
    def one(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    return _ESCAPE.sub(one, path)


def expand_env(text: str, env: Mapping[str, str] | None = None, *, url: bool = False) -> str:
    """``text`` with every ``{env:NAME}`` replaced by the variable (percent-encoded when ``url``).
    A variable that is not set is a :class:`UsageError` naming it (never its value)."""
    if "{env:" not in text:
        return text
    environ = os.environ if env is None else env

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in environ:
            raise UsageError(f"stage key names {{env:{name}}}, but {name} is not set")
        value = environ[name]
        return quote(value, safe="") if url else value

    return ENV_PLACEHOLDER.sub(one, text)


def parse_target_url(url: str, *, what: str = "http_post URL", env: Mapping[str, str] | None = None) -> TargetUrl:
    """Parse and check an http(s) URL (``{env:NAME}`` placeholders replaced from ``env`` first);
    ``ValueError`` saying what is wrong (never echoing a query or a placeholder's value)."""
    template = url
    if "{env:" in url:
        head = urlsplit(url)
        if "{env:" in head.netloc or "{env:" in head.scheme:
            raise ValueError(f"{what}: {{env:...}} placeholders are allowed in the path and query only")
        url = expand_env(url, env, url=True)
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
    if _ENCODED_SEPARATOR.search(path):
        raise ValueError(f"{what} path has an encoded separator or NUL (%2F, %5C or %00)")
    if any(unquote(seg) in (".", "..") for seg in path.split("/")):
        raise ValueError(f"{what} path has . or .. segments (plain or percent-encoded)")
    # Defence against parser differentials: the HTTP client must see the same origin we checked.
    import httpx  # here, not at import: every run imports this module, few check an HTTP target

    try:
        seen = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise ValueError(f"{what} is not a valid URL") from None
    if (seen.scheme, seen.host.lower(), seen.port or _DEFAULT_PORTS[scheme]) != (scheme, host, port):
        raise ValueError(f"{what} is ambiguous (parsers disagree on its origin)")
    return TargetUrl(url, scheme, host, port, _normal_path(path), bool(parts.query), template)


def allowlist_from_env(env: Mapping[str, str] | None = None) -> tuple[TargetUrl, ...] | None:
    """The parsed allowlist, or ``None`` when the variable is unset (everything admitted). Set, it
    must name at least one URL: an empty value or one of only spaces and commas is a
    :class:`UsageError`, as is a malformed entry (naming the variable and the entry's position)."""
    env = os.environ if env is None else env
    if HTTP_POST_ALLOWLIST_ENV not in env:
        return None
    raw = env[HTTP_POST_ALLOWLIST_ENV]
    entries = [e.strip() for e in raw.split(",") if e.strip()]
    if not entries:
        raise UsageError(f"{HTTP_POST_ALLOWLIST_ENV} is set but names no URL; unset it to admit every URL, "
                         "or list the URLs to admit")
    out = []
    for i, entry in enumerate(entries):
        if "{env:" in entry:
            raise UsageError(f"{HTTP_POST_ALLOWLIST_ENV} entry {i + 1} must not hold placeholders")
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


def exec_program_problem(program: str) -> str | None:
    """Why ``program`` cannot be an exec program (not absolute, or not in normal form), or None."""
    if not program.startswith("/"):
        return (f"exec program {program[:60]!r} is not an absolute path; programs are never looked up on PATH "
                "or against the working directory")
    if os.path.normpath(program) != program or program.endswith("/"):
        return f"exec program {program[:60]!r} is not a normal absolute path (no //, . or .. parts)"
    if "{env:" in program:
        return "exec program must be written out, not taken from {env:...}"
    return None


def parse_exec_key(key: str) -> ExecCmd:
    """``exec:/PROGRAM|ARG|...`` to :class:`ExecCmd`; ``ValueError`` on an empty key, a NUL, an empty
    or relative program. Arguments keep their ``{env:NAME}`` placeholders (see :func:`expand_env`)."""
    body = key[len(EXEC_PREFIX):] if key.startswith(EXEC_PREFIX) else key
    if not body:
        raise ValueError("exec stage key names no program")
    if "\x00" in body:
        raise ValueError("exec stage key contains a NUL character")
    program, *args = body.split("|")
    if not program:
        raise ValueError("exec stage key has an empty program")
    why = exec_program_problem(program)
    if why is not None:
        raise ValueError(why)
    return ExecCmd(program, tuple(args))


def exec_allowlist(env: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """The allowlist entries, or ``None`` when ``BYTEOR_EXEC_ALLOWLIST`` is unset or empty (exec
    disabled). Each entry is ``PROGRAM`` (any arguments) or ``PROGRAM|ARG|...`` (exactly that
    command), compared exactly after trimming the spaces around each comma; a program that is not an
    absolute path is a :class:`UsageError`."""
    env = os.environ if env is None else env
    entries = frozenset(e.strip() for e in env.get(EXEC_ALLOWLIST_ENV, "").split(",") if e.strip())
    for entry in entries:
        why = exec_program_problem(entry.split("|", 1)[0])
        if why is not None:
            raise UsageError(f"{EXEC_ALLOWLIST_ENV}: {why}")
    return entries or None


def exec_admitted(cmd: ExecCmd, allowlist: frozenset[str]) -> bool:
    """An entry equal to the program admits any arguments; an entry with ``|`` admits exactly the
    command it spells (placeholders compared as written)."""
    return cmd.program in allowlist or "|".join(cmd.argv) in allowlist


def action_family(key: str) -> str | None:
    if key.startswith(HTTP_POST_PREFIX):
        return "http_post"
    if key.startswith(EXEC_PREFIX):
        return "exec"
    return None


def admission(key: str, env: Mapping[str, str] | None = None) -> str | None:
    """Why ``key`` is refused before any policy applies (a Deny reason), or ``None`` when admitted.

    A malformed key (not http(s), userinfo, dot segments or encoded separators, NUL, a relative or
    empty program) and a target the allowlist does not admit are both refusals: the stage may never
    run, whatever the posture. Raises :class:`~byteor.UsageError` when an allowlist variable itself is
    malformed or a ``{env:NAME}`` placeholder names an unset variable.
    """
    env = os.environ if env is None else env
    fam = action_family(key)
    try:
        if fam == "http_post":
            target = parse_target_url(key[len(HTTP_POST_PREFIX):], env=env)
            allow = allowlist_from_env(env)
            if not url_admitted(target, allow):
                return f"{target.display} is not admitted by {HTTP_POST_ALLOWLIST_ENV}"
            return None
        if fam == "exec":
            cmd = parse_exec_key(key)
            programs = exec_allowlist(env)
            if programs is None:
                return f"exec is disabled: {EXEC_ALLOWLIST_ENV} is not set"
            if not exec_admitted(cmd, programs):
                return f"program {cmd.program!r} with these arguments is not admitted by {EXEC_ALLOWLIST_ENV}"
            return None
    except UsageError:  # a malformed allowlist variable is the operator's usage error (exit 2)
        raise
    except ValueError as exc:
        return str(exc)
    return "not an action stage key (expected http_post:<url> or exec:PROGRAM|ARG|...)"
