"""exec stages with real subprocesses: off by default, exact allowlist, no shell (``;`` and ``$()``
arrive literally), input on stdin, NUL refused, the timeout kills the whole process group."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor import ActionFailed, PolicyRefused, UsageError, load_spec_file, spec_hash
from byteor._stage import StageContext
from byteor.actions import DeadLetterJournal, parse_exec_key, resolve_action
from byteor.policy.gate import RunGate, gate_run


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("BYTEOR_EXEC_ALLOWLIST", "BYTEOR_EXEC_TIMEOUT", "BYTEOR_POLICY_FILE"):
        monkeypatch.delenv(name, raising=False)
    yield


def _spec(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "spec.kv"
    path.write_text("pipeline.name=x\npipeline.target=SingleRing\npipeline.stages.0.id=run\n"
                    f"pipeline.stages.0.op=resolver\npipeline.stages.0.resolver_key={key}\n")
    return path


def _gate(spec_path: Path, posture: str = "dev") -> RunGate:
    spec = load_spec_file(spec_path)
    return gate_run(spec, spec_path=str(spec_path), spec_hash=spec_hash(spec), posture=posture,
                    dry_run=False, approval=None, key_set=None)


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "prog.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _send(fn: object, data: bytes) -> int:
    slot = bytearray(64)
    slot[: len(data)] = data
    assert callable(fn)
    n: int = fn(memoryview(slot), len(data))
    assert bytes(slot[:n]) == data
    return n


def test_exec_is_off_unless_allowlisted_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prog = _script(tmp_path, "cat > /dev/null\n")
    spec_path = _spec(tmp_path, f"exec:{prog}")
    with pytest.raises(PolicyRefused, match="exec is disabled: BYTEOR_EXEC_ALLOWLIST is not set"):
        _gate(spec_path)
    for near_miss in (prog + "x", prog[:-1], "/bin/sh", prog.upper(), prog + "|arg"):
        monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", near_miss)
        with pytest.raises(PolicyRefused, match="is not admitted by BYTEOR_EXEC_ALLOWLIST"):
            _gate(spec_path)
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", "prog.sh")
    with pytest.raises(UsageError, match=r"BYTEOR_EXEC_ALLOWLIST: exec program 'prog\.sh' is not an absolute path"):
        _gate(spec_path)
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", f"/bin/true, {prog}")
    assert [d.decision for d in _gate(spec_path).decisions] == ["Allow"]
    # approval and policy still apply to an allowlisted program
    with pytest.raises(PolicyRefused, match="RequireApproval"):
        _gate(spec_path, "prod")
    with pytest.raises(PolicyRefused, match="missing"):
        resolve_action(f"exec:{prog}", StageContext())


def test_no_shell_arguments_arrive_literally_and_input_on_stdin(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "args.txt"
    stdin_copy = tmp_path / "stdin.bin"
    prog = _script(tmp_path, f"for a in \"$@\"; do printf '%s\\n' \"$a\"; done > {out}\ncat > {stdin_copy}\n")
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", prog)
    monkeypatch.chdir(tmp_path)
    key = f"exec:{prog}|a;touch pwned1|$(touch pwned2)|`touch pwned3`|two words||*"
    stage = resolve_action(key, _gate(_spec(tmp_path, key)).context)
    assert (stage.family, stage.modifies, stage.side_effect, stage.target) == ("exec", False, True, prog)
    assert _send(stage.fn, b"in\x00put") == 6
    assert out.read_text().split("\n")[:-1] == ["a;touch pwned1", "$(touch pwned2)", "`touch pwned3`",
                                                "two words", "", "*"]
    assert stdin_copy.read_bytes() == b"in\x00put"
    assert not any((tmp_path / f"pwned{i}").exists() for i in (1, 2, 3))


def test_nul_and_empty_program_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NUL"):
        parse_exec_key("exec:/bin/echo|a\x00b")
    with pytest.raises(ValueError, match="empty program"):
        parse_exec_key("exec:|arg")
    with pytest.raises(ValueError, match="no program"):
        parse_exec_key("exec:")
    with pytest.raises(PolicyRefused, match="NUL"):
        resolve_action("exec:/bin/echo\x00", StageContext(decisions={"exec:/bin/echo\x00": "Allow"}))
    with pytest.raises(PolicyRefused, match="NUL"):
        resolve_action("exec:/bin/echo\x00", StageContext(dry_run=True))


def test_nonzero_exit_fails_and_dead_letters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prog = _script(tmp_path, "cat > /dev/null\nexit 3\n")
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", prog)
    key = f"exec:{prog}|x"
    stage = resolve_action(key, _gate(_spec(tmp_path, key)).context)
    with pytest.raises(ActionFailed, match="exited with status 3"):
        _send(stage.fn, b"data")
    [rec] = DeadLetterJournal(str(tmp_path / "dead-letter")).records()
    assert (rec.family, rec.target, rec.input, rec.stage_key) == ("exec", prog, b"data", key)


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_timeout_kills_the_whole_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "child.pid"
    prog = _script(tmp_path, f"sleep 60 &\necho $! > {pidfile}\nsleep 60\n")
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", prog)
    monkeypatch.setenv("BYTEOR_EXEC_TIMEOUT", "0.5")
    key = f"exec:{prog}"
    stage = resolve_action(key, _gate(_spec(tmp_path, key)).context)
    with pytest.raises(ActionFailed, match=r"killed after the 0\.5 s timeout"):
        _send(stage.fn, b"x")
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10  # bounded wait for the kernel to finish the kill
    while not _gone_or_zombie(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(child), "the background child of the exec'd program survived"


def test_bad_timeout_variable_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", "/bin/true")
    monkeypatch.setenv("BYTEOR_EXEC_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="BYTEOR_EXEC_TIMEOUT='soon' is not a number") as info:
        resolve_action("exec:/bin/true", StageContext(decisions={"exec:/bin/true": "Allow"}))
    assert getattr(info.value, "exit_code", None) == 2


def test_missing_program_and_ignored_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "no-such-program")
    quiet = _script(tmp_path, "exit 0\n")  # never reads its stdin
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", f"{missing},{quiet}")
    with pytest.raises(PolicyRefused, match="no-such-program cannot be used: No such file"):
        resolve_action(f"exec:{missing}", StageContext(decisions={f"exec:{missing}": "Allow"},
                                                       dead_letter_dir=str(tmp_path / "dl")))
    stage = resolve_action(f"exec:{quiet}", StageContext(decisions={f"exec:{quiet}": "Allow"}))
    slot = bytearray(1 << 20)  # far more than a pipe buffer: the unread input must not hang or fail
    assert stage.fn(memoryview(slot), len(slot)) == len(slot)


SECRETS = {"AWS_SECRET_ACCESS_KEY": "aws-secret-3f9", "DATABASE_URL": "postgres://app:db-pw-77@db/app",
           "GITHUB_TOKEN": "ghp_token_81c", "BYTEOR_AGENT_API_KEY": "agent-key-55a", "HOME_ID": "not-secret-1"}


def test_the_child_gets_a_minimal_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`exec:sh|-c|env>f` wrote AWS_SECRET_ACCESS_KEY, DATABASE_URL, GITHUB_TOKEN and more into f."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    dump = tmp_path / "env.txt"
    key = f"exec:/bin/sh|-c|env > {dump}"
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", "/bin/sh")
    stage = resolve_action(key, _gate(_spec(tmp_path, key)).context)
    _send(stage.fn, b"x")
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    seen.pop("PWD", None)  # sh sets these itself
    seen.pop("SHLVL", None)
    seen.pop("_", None)
    assert seen == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    # a documented way to pass named variables: BYTEOR_EXEC_ENV
    monkeypatch.setenv("BYTEOR_EXEC_ENV", "GITHUB_TOKEN, HOME_ID")
    stage = resolve_action(key, _gate(_spec(tmp_path, key)).context)
    _send(stage.fn, b"x")
    text = dump.read_text()
    assert "GITHUB_TOKEN=ghp_token_81c" in text and "HOME_ID=not-secret-1" in text
    assert "aws-secret-3f9" not in text and "db-pw-77" not in text and "agent-key-55a" not in text
    monkeypatch.setenv("BYTEOR_EXEC_ENV", "BYTEOR_AGENT_API_KEY")
    with pytest.raises(UsageError, match="BYTEOR_AGENT_API_KEY is never passed to a program"):
        resolve_action(key, _gate(_spec(tmp_path, key)).context)


def test_a_bare_or_relative_program_is_refused_never_looked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              cli) -> None:
    """A bare name was found on PATH and a relative one against the working directory, so a planted
    binary ran. Now the key is invalid (exit 3) and the gate denies it: nothing is looked up."""
    marker = tmp_path / "planted-ran"
    planted = tmp_path / "bin"
    planted.mkdir()
    for name in ("cat", "tool"):
        (planted / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (planted / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{planted}:{os.environ['PATH']}")
    monkeypatch.chdir(planted)
    for key in ("exec:cat", "exec:./tool", "exec:bin/tool"):
        spec_path = _spec(tmp_path, key)
        res = cli("validate", str(spec_path))
        assert res.returncode == 3 and "exec needs an absolute program path" in res.stderr, res.stderr
        with pytest.raises(ValueError, match="is not an absolute path"):
            parse_exec_key(key)
        monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", "/bin/cat")
        with pytest.raises(PolicyRefused, match=r"Deny: exec program .* is not an absolute path"):
            _gate(spec_path)
        res = cli("run", str(spec_path), "--sp", "--input-ascii=x", script="byteor-actiongraph",
                  env={"BYTEOR_EXEC_ALLOWLIST": key.removeprefix("exec:"), "PATH": os.environ["PATH"]},
                  cwd=planted)
        assert res.returncode in (2, 3) and "Traceback" not in res.stderr, res.stderr
    assert not marker.exists()


def test_the_allowlist_can_pin_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry PROGRAM|ARG could never match before, so allowing a program allowed any arguments."""
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", "/bin/echo|hello|world")
    assert [d.decision for d in _gate(_spec(tmp_path, "exec:/bin/echo|hello|world")).decisions] == ["Allow"]
    for other in ("exec:/bin/echo", "exec:/bin/echo|hello", "exec:/bin/echo|hello|world|again"):
        with pytest.raises(PolicyRefused, match="with these arguments is not admitted"):
            _gate(_spec(tmp_path, other))
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", "/bin/echo")
    assert [d.decision for d in _gate(_spec(tmp_path, "exec:/bin/echo|anything")).decisions] == ["Allow"]


def test_a_program_another_user_can_replace_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    prog = shared / "p.sh"
    prog.write_text("#!/bin/sh\ncat >/dev/null\n")
    prog.chmod(0o755)
    key = f"exec:{prog}"
    monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", str(prog))
    ctx = _gate(_spec(tmp_path, key)).context
    resolve_action(key, ctx)  # fine as it is
    shared.chmod(0o777)
    with pytest.raises(PolicyRefused, match="which another user can write"):
        resolve_action(key, ctx)
    shared.chmod(0o755)
    prog.chmod(0o757)
    with pytest.raises(PolicyRefused, match="can be replaced by another user"):
        resolve_action(key, ctx)
    prog.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(prog, 65534, 65534)
        with pytest.raises(PolicyRefused, match="owner uid 65534"):
            resolve_action(key, ctx)
