"""Resolver stage-key families known to this build, and the per-family syntax check.

A resolver stage names its implementation with a stage key ``<family>:<rest>``. The builtin families
are ``http_post`` (``http_post:<http(s) url>``), ``exec`` (``exec:PROGRAM|ARG|...``), ``dataguard``
(``dataguard:<profile>``) and ``py`` (``py:module.path:function``). Installed distributions add
families through the entry-point group ``byteor.stages`` (entry-point name = family name).

Validation fails closed: a key whose family is not known here, or whose text does not have its
family's shape, is an error. This module only checks the *shape*; resolving a key into a runnable
stage happens once at startup in the runtime.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from functools import lru_cache
from urllib.parse import urlsplit

from .._redact import argv_credential_parts, url_credential_parts

__all__ = [
    "BUILTIN_FAMILIES",
    "ENTRY_POINT_GROUP",
    "check_resolver_key",
    "entry_point_families",
    "family_of",
    "known_families",
    "resolvable",
]

BUILTIN_FAMILIES = ("http_post", "exec", "dataguard", "py")
#: Entry points in this group add resolver families; the entry-point name is the family.
ENTRY_POINT_GROUP = "byteor.stages"

_PY_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{env:[A-Za-z_][A-Za-z0-9_]*\}")
_ANY_PLACEHOLDER = re.compile(r"\{env:[^}]*\}?")
_URL_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_FAMILY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


@lru_cache(maxsize=1)
def entry_point_families() -> tuple[str, ...]:
    """Families added by installed distributions (group ``byteor.stages``), sorted, builtins excluded."""
    from importlib import metadata  # here: scanning distributions is slow, and most runs never need it

    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken distribution's metadata must not break validation of every spec
        return ()
    return tuple(sorted({ep.name for ep in eps if ep.name not in BUILTIN_FAMILIES}))


def known_families() -> tuple[str, ...]:
    """Every resolver family this build knows: the builtins, then entry-point families (sorted)."""
    return BUILTIN_FAMILIES + entry_point_families()


def family_of(key: str) -> str:
    """The family part of a stage key (text before the first ``:``; the whole key if it has none)."""
    return key.split(":", 1)[0]


def _check_http_post(rest: str) -> str | None:
    # Messages never echo the URL: it may carry credentials or a token in its query.
    if not rest.startswith(("http://", "https://")):
        return "http_post needs an http:// or https:// URL"
    if _URL_BAD_CHARS.search(rest):
        return "http_post URL contains whitespace, a control character or a backslash"
    authority = re.split(r"[/?#]", rest.split("://", 1)[1], maxsplit=1)[0]
    if "{env:" in authority:
        return "http_post URL: {env:NAME} placeholders are allowed in the path and query only"
    try:
        parts = urlsplit(rest)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return "http_post URL is malformed (bad host or port)"
    if "@" in parts.netloc:
        return "http_post URL must not embed credentials (user:pass@host); secrets do not belong in a spec"
    if not host:
        return "http_post URL has no host"
    why = _placeholders(rest)
    if why:
        return f"http_post URL: {why}"
    found = url_credential_parts(rest)
    if found:
        return (f"http_post URL carries a credential ({', '.join(found)}); secrets do not belong in a spec: write "
                "{env:NAME} in its place and set NAME in the environment")
    return None


def _placeholders(text: str) -> str | None:
    for m in _ANY_PLACEHOLDER.finditer(text):
        if not _PLACEHOLDER.fullmatch(m.group(0)):
            return f"malformed placeholder {m.group(0)[:40]!r} (expected {{env:NAME}})"
    return None


def _check_exec(rest: str) -> str | None:
    if "\x00" in rest:
        return "exec key contains a NUL byte"
    program, *args = rest.split("|")
    if not program:
        return "exec needs a program: exec:/ABSOLUTE/PROGRAM|ARG|..."
    if not program.startswith("/") or os.path.normpath(program) != program:
        return ("exec needs an absolute program path (exec:/usr/bin/prog|ARG|...); programs are never looked up "
                "on PATH or against the working directory")
    for arg in args:
        why = _placeholders(arg)
        if why:
            return f"exec argument: {why}"
    found = argv_credential_parts(args)
    if found:
        return (f"exec arguments carry a credential ({', '.join(found)}); secrets do not belong in a spec: write "
                "{env:NAME} in its place, or pass the variable to the program with BYTEOR_EXEC_ENV")
    return None


def _check_dataguard(rest: str) -> str | None:
    if not rest:
        return "dataguard needs a profile: dataguard:<profile>"
    return None


def _check_py(rest: str) -> str | None:
    if not _PY_TARGET.fullmatch(rest):
        return "py needs py:module.path:function"
    return None


_CHECKS = {
    "http_post": _check_http_post,
    "exec": _check_exec,
    "dataguard": _check_dataguard,
    "py": _check_py,
}


def check_resolver_key(key: str | None) -> str | None:
    """Why ``key`` is not a usable resolver stage key of a known family, or ``None`` when it is.

    Unknown families fail closed. Entry-point families are checked for a non-empty family name only;
    their own resolver checks the rest at startup.
    """
    if key is None or key == "":
        return "a resolver stage needs a resolver_key (<family>:<...>)"
    if ":" not in key:
        if key in _CHECKS:
            return f"stage key {key!r} is incomplete: expected {key}:<...>"
        if key in entry_point_families():
            return None
        return _unknown(key)
    family, rest = key.split(":", 1)
    check = _CHECKS.get(family)
    if check is not None:
        return check(rest)
    if _FAMILY_NAME.fullmatch(family) and family in entry_point_families():
        return None
    return _unknown(family)


def _unknown(family: str) -> str:
    return f"unknown resolver family {family[:60]!r}; this build knows {', '.join(known_families())}"


#: The module that implements each builtin family (``py`` names its own module).
_BUILTIN_MODULES = {
    "http_post": "byteor.actions.http_post",
    "exec": "byteor.actions.exec_action",
    "dataguard": "byteor.dataguard",
}


def resolvable(key: str) -> str | None:
    """Why this build cannot resolve ``key`` (bad shape, missing family module, ``py`` target not
    importable, entry point that fails to load), or ``None`` when it can. Imports the target module;
    it does not build or start the stage."""
    why = check_resolver_key(key)
    if why is not None:
        return why
    family = family_of(key)
    if family == "py":
        module_name, func = key[len("py:"):].split(":", 1)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # any import failure means: cannot resolve here
            return f"py stage module {module_name!r} cannot be imported: {type(exc).__name__}: {exc}"
        if not callable(getattr(module, func, None)):
            return f"py stage {module_name}:{func} is not a callable in that module"
        return None
    builtin_module = _BUILTIN_MODULES.get(family)
    if builtin_module is not None:
        module_name = builtin_module
        try:
            found = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            return f"the {family} family is not in this build ({module_name} missing)"
        return None
    from importlib import metadata

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == family:
            try:
                ep.load()
            except Exception as exc:  # a broken plug-in is a reason, not a crash
                return f"entry point {ep.value!r} for family {family!r} fails to load: {exc}"
            return None
    return f"unknown resolver family {family!r}"
