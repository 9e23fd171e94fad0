"""exec stages with real subprocesses: off by default, exact allowlist, no shell (``;`` and ``$()``
arrive literally), input on stdin, NUL refused, the timeout kills the whole process group."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor import ActionFailed, PolicyRefused, load_spec_file, spec_hash
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
    for near_miss in ("prog.sh", prog + "x", prog[:-1], "/bin/sh", prog.upper()):
        monkeypatch.setenv("BYTEOR_EXEC_ALLOWLIST", near_miss)
        with pytest.raises(PolicyRefused, match="not listed in BYTEOR_EXEC_ALLOWLIST"):
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
    stage = resolve_action(f"exec:{missing}", StageContext(decisions={f"exec:{missing}": "Allow"},
                                                          dead_letter_dir=str(tmp_path / "dl")))
    with pytest.raises(ActionFailed, match="cannot start"):
        _send(stage.fn, b"x")
    stage = resolve_action(f"exec:{quiet}", StageContext(decisions={f"exec:{quiet}": "Allow"}))
    slot = bytearray(1 << 20)  # far more than a pipe buffer: the unread input must not hang or fail
    assert stage.fn(memoryview(slot), len(slot)) == len(slot)
