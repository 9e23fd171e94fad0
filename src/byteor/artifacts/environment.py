"""``environment.json`` (v1, redacted as docs/security.md says): the process environment, never a secret in clear.

Fields: ``pid`` (u32), ``cwd`` (string or null), ``args`` (string list), ``env`` (``[name, value]``
pairs sorted by name), ``proc_status`` (the text of ``/proc/self/status`` or null), plus the additive
``environment_v`` version field.

Redaction (applied by :func:`capture_environment`, and again by the writer so that a hand-built
record cannot leak either) follows the rules of :mod:`byteor._redact`: secret-named variables become
``<redacted>``, URLs lose their userinfo and credential-like query values, and the command line
loses the values of secret options (``--token=V``, ``--approval V``, ``-p V``) and every secret value
the environment holds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ArtifactError, UsageError
from .._json import check_version, read_json_object, require, write_json
from .._redact import (
    REDACTED,
    SECRET_NAME_MARKERS,
    is_secret_name,
    redact_argv,
    redact_env,
    redact_urls_in,
    secret_values,
)

__all__ = [
    "REDACTED",
    "SECRET_NAME_MARKERS",
    "EnvironmentRecord",
    "capture_environment",
    "capture_process_environment",
    "is_secret_name",
    "read_environment",
    "redact_args",
    "redact_env",
    "redact_value",
    "write_environment",
]

VERSION_FIELD = "environment_v"

#: URL redaction (rule 2 of :mod:`byteor._redact`), under the name this module always exported.
redact_value = redact_urls_in


def redact_args(args: Iterable[str], env: Mapping[str, str] | None = None) -> list[str]:
    """Command-line arguments with secret option values, URL credentials and the secret values of
    ``env`` (default: this process's environment) redacted."""
    return redact_argv(args, secret_values(env))


@dataclass(frozen=True)
class EnvironmentRecord:
    """One ``environment.json``. ``env`` is sorted by name; values are already redacted."""

    pid: int
    cwd: str | None
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    proc_status: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            VERSION_FIELD: 1,
            "pid": self.pid,
            "cwd": self.cwd,
            "args": list(self.args),
            "env": [[k, v] for k, v in self.env],
            "proc_status": self.proc_status,
        }

    def redacted(self) -> EnvironmentRecord:
        """The same record with the redaction rules applied (idempotent)."""
        return EnvironmentRecord(
            self.pid,
            self.cwd,
            tuple(redact_args(self.args)),
            tuple(redact_env(dict(self.env))),
            self.proc_status,
        )

    def get(self, name: str) -> str | None:
        for key, value in self.env:
            if key == name:
                return value
        return None


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def capture_environment(
    *, args: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> EnvironmentRecord:
    """The current process: pid, cwd, argv, redacted environment, ``/proc/self/status``."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # the directory was removed under us
        cwd = None
    argv = list(sys.argv if args is None else args)
    environ = dict(os.environ if env is None else env)
    return EnvironmentRecord(
        pid=os.getpid(),
        cwd=cwd,
        args=tuple(redact_args(argv, environ)),
        env=tuple(redact_env(environ)),
        proc_status=_read_text("/proc/self/status"),
    )


def capture_process_environment(pid: int) -> EnvironmentRecord:
    """Another process's pid, cwd, argv, redacted environment and status, from ``/proc/<pid>``
    (a live pipeline process, for instance). Raises :class:`UsageError` naming the pid when the
    process does not exist or its environment is not readable by this user."""
    base = Path(f"/proc/{pid}")
    try:
        environ_raw = (base / "environ").read_bytes()
        cmdline_raw = (base / "cmdline").read_bytes()
    except FileNotFoundError:
        raise UsageError(f"--pid={pid}: no such process") from None
    except PermissionError:
        raise UsageError(
            f"--pid={pid}: not allowed to read its environment (run as its user or root)"
        ) from None
    except OSError as exc:
        raise UsageError(f"--pid={pid}: cannot read /proc/{pid}: {exc.strerror}") from None
    env: dict[str, str] = {}
    for item in environ_raw.split(b"\0"):
        if item:
            name, _, value = item.decode("utf-8", errors="replace").partition("=")
            env[name] = value
    args = [a.decode("utf-8", errors="replace") for a in cmdline_raw.split(b"\0")[:-1]]
    try:
        cwd: str | None = os.readlink(base / "cwd")
    except OSError:
        cwd = None
    return EnvironmentRecord(
        pid=pid,
        cwd=cwd,
        args=tuple(redact_args(args, env)),
        env=tuple(redact_env(env)),
        proc_status=_read_text(str(base / "status")),
    )


def write_environment(path: str | os.PathLike[str], record: EnvironmentRecord) -> None:
    """Write ``environment.json`` (redaction re-applied: nothing secret reaches the file)."""
    write_json(path, record.redacted().to_json())


def read_environment(path: str | os.PathLike[str]) -> EnvironmentRecord:
    """Read ``environment.json``; a newer major version or a malformed field is an ArtifactError."""
    p = os.fspath(path)
    obj = read_json_object(p, artifact="environment")
    check_version(obj, artifact="environment", field=VERSION_FIELD, path=p)
    pid = require(obj, "pid", int, path=p)
    if not 0 <= pid < 2**32:
        raise ArtifactError(f"{p}: field `pid` must be a u32, found {pid}")
    cwd = require(obj, "cwd", str, path=p, nullable=True)
    args = require(obj, "args", list, path=p)
    if not all(isinstance(a, str) for a in args):
        raise ArtifactError(f"{p}: field `args` must be a list of strings")
    env_raw = require(obj, "env", list, path=p)
    env: list[tuple[str, str]] = []
    for i, pair in enumerate(env_raw):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ArtifactError(f"{p}: field `env.{i}` must be a [name, value] pair of strings")
        env.append((pair[0], pair[1]))
    if [k for k, _ in env] != sorted(k for k, _ in env):
        raise ArtifactError(f"{p}: field `env` must be sorted by name")
    status = require(obj, "proc_status", str, path=p, nullable=True)
    return EnvironmentRecord(pid, cwd, tuple(args), tuple(env), status)
