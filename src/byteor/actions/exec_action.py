"""``exec:/PROGRAM|ARG|...``: run an allowlisted program with the message bytes on its stdin.

Parsed once at resolve time: the key is split on ``|`` (no quoting, no shell: ``;``, ``$()`` and
spaces reach the program literally), a NUL anywhere is refused, the program must be an absolute
path (never looked up on ``PATH`` or against the working directory) admitted by
``BYTEOR_EXEC_ALLOWLIST`` (``PROGRAM`` admits any arguments, ``PROGRAM|ARG|...`` exactly that
command; exec is off when it is unset), and the program file must be one that only root or this user
can replace: a regular executable file owned by root or this user, not writable by group or others,
in directories that pass the same test (a sticky world-writable directory such as ``/tmp`` is
accepted as an ancestor). ``{env:NAME}`` in an argument is replaced from the environment.

The child gets a minimal environment, never byteor's: ``PATH=/usr/local/bin:/usr/bin:/bin``, the
locale and time zone variables that are set (``LANG``, ``LC_ALL``, ``LC_CTYPE``, ``TZ``), and the
variables named in ``BYTEOR_EXEC_ENV`` (comma-separated names; ``BYTEOR_AGENT_API_KEY`` may not be
named). A secret a program needs is passed that way, by name, never written into the spec.

Per message the program is started in a new session (its own process group), the bytes are written
to stdin, stdout/stderr are discarded, and it must exit 0 within ``BYTEOR_EXEC_TIMEOUT`` seconds
(default 5); at the timeout the whole process group gets SIGKILL. A non-zero exit or a timeout is
not retried (the program may have acted); only transient spawn failures (EAGAIN, ENOMEM, EMFILE,
ENFILE) are retried with the action retry shape.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import subprocess
import time
from collections.abc import Mapping

from .._errors import ActionFailed, PolicyRefused, UsageError
from ..policy.admission import EXEC_ALLOWLIST_ENV, EXEC_PREFIX, ExecCmd, exec_allowlist, expand_env, parse_exec_key
from .retry import RetryConfig, env_number

__all__ = [
    "ALLOWLIST_ENV",
    "BASE_PATH",
    "DEFAULT_TIMEOUT_S",
    "ENV_PASS_ENV",
    "PREFIX",
    "TIMEOUT_ENV",
    "ExecAction",
    "ExecCmd",
    "child_environment",
    "exec_allowlist",
    "parse_exec_key",
    "program_problem",
]

PREFIX = EXEC_PREFIX
ALLOWLIST_ENV = EXEC_ALLOWLIST_ENV
TIMEOUT_ENV = "BYTEOR_EXEC_TIMEOUT"
DEFAULT_TIMEOUT_S = 5.0
_TRANSIENT = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})
#: Comma-separated names of variables passed on to exec children (documented in the module).
ENV_PASS_ENV = "BYTEOR_EXEC_ENV"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
_LOCALE_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
_NEVER_PASSED = ("BYTEOR_AGENT_API_KEY",)


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment an exec child gets (module docstring); :class:`UsageError` when
    ``BYTEOR_EXEC_ENV`` names a malformed or forbidden variable."""
    environ = os.environ if env is None else env
    out = {"PATH": BASE_PATH}
    out.update({name: environ[name] for name in _LOCALE_ENV if name in environ})
    for raw in environ.get(ENV_PASS_ENV, "").split(","):
        name = raw.strip()
        if not name:
            continue
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise UsageError(f"{ENV_PASS_ENV}: {name[:40]!r} is not a variable name")
        if name in _NEVER_PASSED:
            raise UsageError(f"{ENV_PASS_ENV}: {name} is never passed to a program")
        if name in environ:
            out[name] = environ[name]
    return out


def program_problem(program: str) -> str | None:
    """Why ``program`` is not a file only root or this user can replace, or None (module docstring)."""
    try:
        real = os.path.realpath(program, strict=True)
        st = os.stat(real)
    except OSError as exc:
        return f"exec program {program} cannot be used: {exc.strerror}"
    me = os.geteuid()
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
        return f"exec program {program} is not an executable regular file"
    if st.st_uid not in (0, me) or st.st_mode & 0o022:
        return (f"exec program {program} can be replaced by another user (owner uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):04o}); it must be owned by root or this user and not group/world-writable")
    directory = os.path.dirname(real)
    while True:
        d = os.stat(directory)
        if d.st_uid not in (0, me) or (d.st_mode & 0o022 and not d.st_mode & stat.S_ISVTX):
            return (f"exec program {program} lies in {directory}, which another user can write (owner uid "
                    f"{d.st_uid}, mode {stat.S_IMODE(d.st_mode):04o})")
        if directory == "/":
            return None
        directory = os.path.dirname(directory)


class ExecAction:
    """One resolved ``exec`` command. Safe to call from several threads (one child per call)."""

    family = "exec"

    def __init__(self, key: str, cmd: ExecCmd, *, timeout: float, retry: RetryConfig,
                 env: Mapping[str, str] | None = None) -> None:
        self.key = key
        self.cmd = cmd
        self.timeout = timeout
        self.retry = retry
        self._env = child_environment(env)
        self._argv = [expand_env(arg, env) for arg in cmd.argv]

    @property
    def target(self) -> str:
        return self.cmd.program

    @classmethod
    def from_key(cls, key: str, env: Mapping[str, str] | None = None) -> ExecAction:
        env = os.environ if env is None else env
        cmd = parse_exec_key(key)
        why = program_problem(cmd.program)
        if why is not None:
            raise PolicyRefused(why)
        timeout = env_number(env, TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        if timeout <= 0:
            raise UsageError(f"{TIMEOUT_ENV} must be > 0")
        return cls(key, cmd, timeout=timeout, retry=RetryConfig.from_env(env), env=env)

    def _spawn(self) -> subprocess.Popen[bytes]:
        attempt = 0
        while True:
            try:
                return subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        close_fds=True, env=self._env)
            except OSError as exc:
                if exc.errno not in _TRANSIENT or attempt >= self.retry.max_retries:
                    raise ActionFailed(f"exec {self.cmd.program}: cannot start "
                                       f"({exc.strerror or type(exc).__name__})") from None
            time.sleep(self.retry.delay(attempt))
            attempt += 1

    def perform(self, data: bytes, ikey: str | None = None) -> None:
        """Run the program once with ``data`` on stdin; :class:`ActionFailed` unless it exits 0
        within the timeout (after which its whole process group is killed). ``ikey`` is unused: a
        program gets no idempotency key (it is accepted so both families share one signature)."""
        proc = self._spawn()
        try:
            proc.communicate(data, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise ActionFailed(f"exec {self.cmd.program}: killed after the {self.timeout:g} s timeout "
                               f"({TIMEOUT_ENV})") from None
        except BaseException:
            _kill_group(proc)
            raise
        if proc.returncode != 0:
            how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exited with status {proc.returncode}")
            raise ActionFailed(f"exec {self.cmd.program}: {how}")

    def close(self) -> None:
        return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The child leads its own session, so its pid is the group id of everything it started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored; bounded anyway
        proc.wait(timeout=5)
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(OSError):
            proc.stdin.close()
