"""``exec:PROGRAM|ARG|...``: run an allowlisted program with the message bytes on its stdin.

Parsed once at resolve time: the key is split on ``|`` (no quoting, no shell: ``;``, ``$()`` and
spaces reach the program literally), a NUL anywhere is refused, the program must be non-empty and
listed exactly in ``BYTEOR_EXEC_ALLOWLIST`` (comma-separated; exec is off when it is unset).

Per message the program is started in a new session (its own process group), the bytes are written
to stdin, stdout/stderr are discarded, and it must exit 0 within ``BYTEOR_EXEC_TIMEOUT`` seconds
(default 5); at the timeout the whole process group gets SIGKILL. A non-zero exit or a timeout is
not retried (the program may have acted); only transient spawn failures (EAGAIN, ENOMEM, EMFILE,
ENFILE) are retried with the action retry shape. ``BYTEOR_AGENT_API_KEY`` is removed from the
child's environment.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Mapping

from .._errors import ActionFailed, UsageError
from ..policy.admission import EXEC_ALLOWLIST_ENV, EXEC_PREFIX, ExecCmd, exec_allowlist, parse_exec_key
from .retry import RetryConfig, env_number

__all__ = [
    "ALLOWLIST_ENV",
    "DEFAULT_TIMEOUT_S",
    "PREFIX",
    "TIMEOUT_ENV",
    "ExecAction",
    "ExecCmd",
    "exec_allowlist",
    "parse_exec_key",
]

PREFIX = EXEC_PREFIX
ALLOWLIST_ENV = EXEC_ALLOWLIST_ENV
TIMEOUT_ENV = "BYTEOR_EXEC_TIMEOUT"
DEFAULT_TIMEOUT_S = 5.0
_TRANSIENT = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})
_HIDDEN_ENV = ("BYTEOR_AGENT_API_KEY",)


class ExecAction:
    """One resolved ``exec`` command. Safe to call from several threads (one child per call)."""

    family = "exec"

    def __init__(self, key: str, cmd: ExecCmd, *, timeout: float, retry: RetryConfig,
                 env: Mapping[str, str] | None = None) -> None:
        self.key = key
        self.cmd = cmd
        self.timeout = timeout
        self.retry = retry
        base = dict(os.environ if env is None else env)
        for name in _HIDDEN_ENV:
            base.pop(name, None)
        self._env = base
        self._argv = cmd.argv

    @property
    def target(self) -> str:
        return self.cmd.program

    @classmethod
    def from_key(cls, key: str, env: Mapping[str, str] | None = None) -> ExecAction:
        env = os.environ if env is None else env
        cmd = parse_exec_key(key)
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
