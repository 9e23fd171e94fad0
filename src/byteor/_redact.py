"""The one redaction module: what byteor never writes in clear, and how it hides it.

Every writer of logs, artifacts, metrics and error messages goes through these functions (the
command line's error printer, the log filter, ``environment.json``, policy audits, dead-letter
records, bundles). The rules, in the order they apply:

1. **Secret names.** A variable (or option, or query parameter) whose name contains, ignoring case,
   one of :data:`SECRET_NAME_MARKERS` holds a secret: its value becomes ``<redacted>``. ``PWD`` and
   ``OLDPWD`` (the shell's working directory) are not secrets; ``MYSQL_PWD`` is.
2. **URLs.** Anywhere in a value or a text, ``scheme://USERINFO@host`` loses its userinfo
   (``scheme://<redacted>@host``). A ``user:password@`` is taken up to the *last* ``@`` of the URL,
   so a password containing ``/``, ``?`` or ``@`` is hidden whole (a URL ends at whitespace, a quote
   or the next ``scheme://``); an ``@`` further on in a path without such a ``user:`` stays as it
   is. A query parameter with a credential-like name (rule 1, plus ``sig``, ``signature``, ``code``,
   ``hmac``, ``pw``, ``p``) keeps its name and loses its value. The path of a known capability URL
   (Slack, Discord, Zapier and Office 365 webhooks) is hidden after its fixed prefix.
3. **Command lines.** ``--name=VALUE`` and ``--name VALUE`` where ``name`` is secret-named (rule 1,
   plus byteor's ``--approval``), and ``-p VALUE`` / ``-pVALUE`` (the password option of mysql,
   sshpass and friends) lose their value; every argument then goes through rule 2.
4. **Known values.** Text that is not structured (an exception message, a log line) has every known
   secret value masked: the values of secret-named environment variables and the credentials found
   in URL-valued variables, when at least :data:`MIN_SECRET_CHARS` long.

``<redacted>`` replaces what is hidden; nothing of a hidden value is kept (no prefix, no length).
Redaction is idempotent. Secrets belong in the environment, never in a spec: :func:`url_credential_parts`
is what spec validation uses to refuse credential-shaped parts in a stage key's URL.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

__all__ = [
    "MIN_SECRET_CHARS",
    "REDACTED",
    "SECRET_NAME_MARKERS",
    "RedactingFilter",
    "argv_credential_parts",
    "is_secret_name",
    "mask_secrets",
    "redact_argv",
    "redact_env",
    "redact_spec_text",
    "redact_stage_key",
    "redact_strings",
    "redact_text",
    "redact_url",
    "redact_urls_in",
    "scrub",
    "secret_values",
    "url_credential_parts",
]

REDACTED = "<redacted>"
SECRET_NAME_MARKERS = (
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PWD",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "PRIVATE",
    "JWT",
    "WEBHOOK",
    "APPROVAL",
    "SIGNATURE",
)
#: Names that contain a marker but are not secrets.
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})
#: Query parameter names that carry credentials although they contain no marker.
_SECRET_QUERY_NAMES = frozenset({"sig", "signature", "code", "hmac", "pw", "p"})
#: Shortest value masked by value (rule 4): shorter ones would mask ordinary words and numbers.
MIN_SECRET_CHARS = 6

# scheme://... up to whitespace, a quote or the next scheme://: the span a URL can occupy in a text.
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_URL = re.compile(rf"(?P<scheme>{_SCHEME})(?P<rest>(?:(?!{_SCHEME})[^\s'\"<>])*)")
_QUERY_PAIR = re.compile(r"([^&=#]*)(=?)([^&#]*)")
# (host suffix, path prefix) of capability URLs whose path is the credential
_CAPABILITY_PATHS = (
    ("hooks.slack.com", "/services/"),
    ("hooks.slack.com", "/workflows/"),
    ("discord.com", "/api/webhooks/"),
    ("discordapp.com", "/api/webhooks/"),
    (".webhook.office.com", "/"),
    ("outlook.office.com", "/webhook/"),
    ("hooks.zapier.com", "/hooks/"),
)
_SHORT_PASSWORD_OPTIONS = ("-p",)
_EXTRA_SECRET_OPTIONS = frozenset({"approval"})


def is_secret_name(name: str) -> bool:
    """Whether a variable, option or parameter name marks its value as a secret (rule 1)."""
    upper = name.upper()
    if upper in _NOT_SECRET:
        return False
    return any(marker in upper for marker in SECRET_NAME_MARKERS)


def _secret_query_name(name: str) -> bool:
    plain = unquote(name)
    return is_secret_name(plain) or plain.lower() in _SECRET_QUERY_NAMES


def _redact_query(query: str) -> str:
    def one(m: re.Match[str]) -> str:
        name, eq, value = m.group(1), m.group(2), m.group(3)
        if eq and value and value != REDACTED and _secret_query_name(name):
            return f"{name}={REDACTED}"
        return m.group(0)

    return _QUERY_PAIR.sub(one, query)


def _capability_path(host: str, path: str) -> str | None:
    h = host.lower()
    for suffix, prefix in _CAPABILITY_PATHS:
        if (h == suffix.lstrip(".") or h.endswith(suffix)) and path.startswith(prefix) and len(path) > len(prefix):
            return prefix + REDACTED
    return None


def _userinfo_end(rest: str) -> int:
    """Index of the ``@`` that ends the userinfo of ``rest`` (after ``scheme://``), or -1.

    The authority normally ends at the first ``/``, ``?`` or ``#``; but a ``user:password`` whose
    password holds one of those (or an ``@``) is written raw often enough that ``user:...@`` running up
    to the last ``@`` is taken as userinfo too, unless what follows the ``:`` is a port.
    """
    last = rest.rfind("@")
    if last < 0:
        return -1
    head = _AUTHORITY_END.split(rest[:last], maxsplit=1)[0]
    if ":" in head and not head.split(":", 1)[1].isdigit():
        return last
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    return authority.rfind("@")


_AUTHORITY_END = re.compile(r"[/?#]")


def _split_rest(rest: str) -> tuple[str, str, str | None, str | None]:
    """``rest`` after ``scheme://`` as (userinfo or "", hostport+path, query, fragment); query and
    fragment are None when their ``?`` / ``#`` is absent."""
    userinfo = ""
    at = _userinfo_end(rest)
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
    frag: str | None = None
    if "#" in rest:
        rest, frag = rest.split("#", 1)
    query: str | None = None
    if "?" in rest:
        rest, query = rest.split("?", 1)
    return userinfo, rest, query, frag


def redact_url(url: str) -> str:
    """One URL with its userinfo, credential-like query values and capability path hidden (rule 2).

    Text that is not a ``scheme://`` URL is returned unchanged.
    """
    m = _URL.fullmatch(url)
    if m is None:
        return url
    return _redact_url_match(m)


def _redact_url_match(m: re.Match[str]) -> str:
    scheme, rest = m.group("scheme"), m.group("rest")
    userinfo, hostpath, query, frag = _split_rest(rest)
    out = scheme + (f"{REDACTED}@" if userinfo else "")
    host, slash, path = hostpath.partition("/")
    hidden = _capability_path(host.rsplit(":", 1)[0], "/" + path) if slash else None
    out += host + (hidden if hidden is not None else slash + path)
    if query is not None:
        out += "?" + _redact_query(query)
    if frag is not None:
        out += "#" + frag
    return out


def redact_urls_in(text: str) -> str:
    """Every URL inside ``text`` passed through :func:`redact_url`."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_url_match, text)


def redact_env(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The environment as ``(name, value)`` pairs sorted by name: secret-named values become
    ``<redacted>``, every other value has its URLs redacted and the secret values of ``env`` masked
    (a copy of a secret under an innocent name stays hidden)."""
    known = _usable(secret_values(env))
    return [(name, REDACTED if is_secret_name(name) else mask_secrets(redact_urls_in(env[name]), known))
            for name in sorted(env)]


def _option_name(arg: str) -> str:
    return arg.lstrip("-").split("=", 1)[0]


def _secret_option(name: str) -> bool:
    return is_secret_name(name) or name.lower() in _EXTRA_SECRET_OPTIONS


def redact_argv(args: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    """A command line with secret option values hidden (rule 3), URLs redacted (rule 2) and the
    ``secrets`` values masked (rule 4)."""
    known = _usable(secrets)
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            hide_next = False
            if not arg.startswith("-") or arg == "-":
                out.append(REDACTED)
                continue
        if arg.startswith("-") and len(arg) > 1 and arg != "--":
            name = _option_name(arg)
            if "=" in arg and _secret_option(name):
                out.append(arg.split("=", 1)[0] + "=" + REDACTED)
                continue
            if "=" not in arg and arg.startswith("--") and _secret_option(name):
                out.append(arg)
                hide_next = True
                continue
            short = next((o for o in _SHORT_PASSWORD_OPTIONS if arg == o or arg.startswith(o)), None)
            if short is not None and not arg.startswith("--"):
                if arg == short:
                    out.append(arg)
                    hide_next = True
                else:
                    out.append(short + REDACTED)
                continue
        out.append(mask_secrets(redact_urls_in(arg), known))
    return out


def _url_secrets(value: str) -> list[str]:
    found: list[str] = []
    for m in _URL.finditer(value):
        userinfo, _hostpath, query, _frag = _split_rest(m.group("rest"))
        if userinfo:
            found.append(userinfo)
            if ":" in userinfo:
                found.append(userinfo.split(":", 1)[1])
        for qm in _QUERY_PAIR.finditer(query or ""):
            if qm.group(2) and qm.group(3) and _secret_query_name(qm.group(1)):
                found.append(qm.group(3))
    return found


def secret_values(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The values rule 4 masks: secret-named variables' values and credentials inside URL values."""
    environ = os.environ if env is None else env
    found: set[str] = set()
    for name, value in environ.items():
        if not value:
            continue
        if is_secret_name(name):
            found.add(value)
        if "://" in value:
            found.update(_url_secrets(value))
    return frozenset(v for v in found if len(v) >= MIN_SECRET_CHARS)


def _usable(secrets: Iterable[str]) -> list[str]:
    return sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def mask_secrets(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every occurrence of a known secret value replaced by ``<redacted>`` (rule 4).
    ``secrets`` defaults to :func:`secret_values` of the process environment."""
    values = _usable(secret_values() if secrets is None else secrets)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def scrub(text: str, env: Mapping[str, str] | None = None) -> str:
    """Free text made safe to print or store: URLs redacted (rule 2), then known secret values of
    ``env`` (default: the process environment) masked (rule 4)."""
    return mask_secrets(redact_urls_in(text), secret_values(env))


def redact_text(text: str) -> str:
    """:func:`scrub` against the process environment (the short name writers use)."""
    return scrub(text)


def url_credential_parts(url: str) -> list[str]:
    """The credential-shaped parts of one URL, named without their values (for spec validation):
    ``userinfo``, ``query parameter `token```, ``webhook path``. Empty when there are none.
    A value that is an ``{env:NAME}`` placeholder is not a credential: it names where one comes from."""
    m = _URL.fullmatch(url)
    if m is None:
        return []
    userinfo, hostpath, query, _frag = _split_rest(m.group("rest"))
    parts: list[str] = []
    if userinfo:
        parts.append("userinfo (user:password@)")
    for qm in _QUERY_PAIR.finditer(query or ""):
        name, eq, value = qm.group(1), qm.group(2), qm.group(3)
        if eq and value and _secret_query_name(name) and not _ENV_ONLY.fullmatch(value):
            parts.append(f"query parameter `{unquote(name)}`")
    host, slash, path = hostpath.partition("/")
    if slash and "{env:" not in path and _capability_path(host.rsplit(":", 1)[0], "/" + path) is not None:
        parts.append("a webhook path, which is itself the credential")
    return parts


_ENV_ONLY = re.compile(r"\{env:[A-Za-z_][A-Za-z0-9_]*\}")


def argv_credential_parts(args: Iterable[str]) -> list[str]:
    """The credential-shaped arguments of a command line, named without their values (for spec
    validation): ``--password=V`` / ``--token V`` style options (rule 3) whose value is written
    out, and URLs with credential parts. ``{env:NAME}`` values are not credentials. (``-p V`` is
    redacted from command lines but not refused here: too many programs use ``-p`` otherwise.)"""
    parts: list[str] = []
    items = list(args)
    for i, arg in enumerate(items):
        value: str | None = None
        if arg.startswith("--") and _secret_option(_option_name(arg)):
            name = arg.split("=", 1)[0]
            value = arg.split("=", 1)[1] if "=" in arg else (items[i + 1] if i + 1 < len(items) else "")
            if value and not _ENV_ONLY.fullmatch(value):
                parts.append(f"option {name}")
            continue
        for m in _URL.finditer(arg):
            parts.extend(f"URL {p}" for p in url_credential_parts(m.group(0)))
    return parts


_STAGE_FAMILIES = ("http_post:", "exec:")


def redact_stage_key(key: str) -> str:
    """A stage key as it may be shown or stored: an http_post URL through :func:`redact_url`, exec
    arguments through :func:`redact_argv`, anything else through :func:`scrub`. A key that passed
    spec validation comes out unchanged (validation refuses credential-shaped parts)."""
    if key.startswith("http_post:"):
        return "http_post:" + scrub(redact_url(key[len("http_post:"):]))
    if key.startswith("exec:"):
        program, *args = key[len("exec:"):].split("|")
        return "exec:" + "|".join([scrub(program), *redact_argv(args, secret_values())])
    return scrub(key)


def redact_strings(obj: object) -> object:
    """A copy of a JSON-like value with every string made safe: stage keys through
    :func:`redact_stage_key`, every other string through :func:`scrub` (object keys are kept)."""
    if isinstance(obj, str):
        return redact_stage_key(obj) if obj.startswith(_STAGE_FAMILIES) else scrub(obj)
    if isinstance(obj, list):
        return [redact_strings(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact_strings(v) for v in obj)
    if isinstance(obj, dict):
        return {k: redact_strings(v) for k, v in obj.items()}
    return obj


def redact_spec_text(text: str) -> str:
    """spec.kv text with every value that may hold a credential redacted (for an invalid spec kept
    as evidence: a valid one holds none). Keys, comments and line structure are kept."""
    out = []
    for line in text.split("\n"):
        key, eq, value = line.partition("=")
        if eq and not line.startswith("#"):
            safe = redact_stage_key(value) if value.startswith(_STAGE_FAMILIES) else scrub(value)
            out.append(key + eq + safe)
        else:
            out.append(line)
    return "\n".join(out)


class RedactingFilter(logging.Filter):
    """A logging filter that renders each record and passes the text through :func:`scrub`, so no
    handler it is attached to ever writes a secret (log calls may interpolate any value)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed log call: keep the template only
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = None
        return True
