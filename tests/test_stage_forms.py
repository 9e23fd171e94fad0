"""The stage contract, once: map, filter, in-place and read-only stages behave identically in every
executor (one fixture, four modes), are found beside the spec with no PYTHONPATH, and a function
that breaks the contract is named with the message it failed on, losing nothing accepted before it."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from byteor import DROP, Pipeline, PipelineFailed, SpecError, StageContractError, py_key, stage, stage_form
from conftest import BIN, chain_spec_text, mode_cli_args

STAGES = textwrap.dedent("""
    def up(msg):
        return msg.upper()

    def odd_only(msg):
        return msg if msg[-1] % 2 else None

    def bang(msg):
        return bytes(msg) + b"!"

    def first_x(slot, length):
        if length:
            slot[0] = 0x78
        return length

    def nonempty(slot, length):
        return -1 if length == 0 else length
    nonempty.byteor_modifies = False

    def short(msg):
        return msg if len(msg) < 6 else None
    short.byteor_modifies = False

    def reverse(msg):
        return memoryview(bytearray(msg[::-1]))

    def three(a, b, c):
        return b

    def returns_int(msg):
        return 5

    def too_big(msg):
        return msg * 150

    def picky(msg):
        if msg == b"bad":
            raise ValueError("no thanks")
        return msg

    def scribble(slot, length):
        slot[0] = 0x21
        return length
    scribble.byteor_modifies = False

    def wrong_length(slot, length):
        return length + 1000
""")

CHAINS = {
    "map-filter-map-inplace": ["up", "odd_only", "bang", "first_x"],
    "readonly-filter-map": ["nonempty", "short", "reverse"],
    # a read-only stage after one that drops the last message must still release it (no hang)
    "map-readonly": ["odd_only", "nonempty"],
}
MESSAGES = [b"a", b"bc", b"", b"hello", b"abcdefgh", b"xyz1", b"Q", b"ok?", b"q" * 40]


def _reference(module: Any, names: list[str], messages: list[bytes]) -> list[bytes]:
    """What running the stages one after another in plain Python gives."""
    out = []
    for msg in messages:
        cur: bytes | None = msg
        for name in names:
            fn = getattr(module, name)
            form = stage_form(fn)
            assert cur is not None
            if form == "map":
                res = fn(cur)
                cur = None if res is None else bytes(res)
            elif form == "filter":
                cur = None if fn(cur) is None else cur
            else:
                buf = bytearray(cur) + bytearray(64 - len(cur))
                n = fn(memoryview(buf), len(cur))
                cur = None if n == DROP else bytes(buf[:n])
            if cur is None:
                break
        if cur is not None:
            out.append(cur)
    return out


def _open(mode: str, spec: Path, ring_dir: Path, tmp_path: Path, **kw: Any) -> Pipeline:
    sp = mode in ("sp", "lanegraph-sp")
    return Pipeline.open(spec, sp=sp, ring_path=None if sp else str(ring_dir), wait="block",
                         journal_dir=str(tmp_path / "journal"), **kw)


def _load(path: Path) -> Any:
    """The stage module as plain Python sees it (for the reference results), without sys.path."""
    spec = importlib.util.spec_from_file_location(f"ref_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_every_form_behaves_the_same_in_every_executor(execution_mode: str, chain: str, tmp_path: Path,
                                                       ring_dir: Path,
                                                       write_stage_module: Callable[[str], str]) -> None:
    mod = write_stage_module(STAGES)
    names = CHAINS[chain]
    messages = [m for m in MESSAGES if m] + [b"even0"] if chain.startswith("map") else MESSAGES
    spec = tmp_path / "forms.kv"
    spec.write_text(chain_spec_text(execution_mode, [f"py:{mod}:{n}" for n in names]))
    expected = _reference(_load(tmp_path / f"{mod}.py"), names, messages)
    with _open(execution_mode, spec, ring_dir, tmp_path) as p:
        p.publish_many(messages)
    assert list(p.outputs()) == expected


def test_plain_functions_beside_the_spec_run_from_the_command_line(execution_mode: str, tmp_path: Path,
                                                                   ring_dir: Path, cli: Any,
                                                                   write_stage_module: Callable[[str], str]) -> None:
    """``py:mod:up`` / ``py:mod:odd_only`` with the module beside the spec and PYTHONPATH unset."""
    mod = write_stage_module(STAGES)
    spec = tmp_path / "plain.kv"
    spec.write_text(chain_spec_text(execution_mode, [f"py:{mod}:up", f"py:{mod}:odd_only"]))
    words = [b"alpha", b"bet2", b"gamma1", b"delta4", b"eps"]
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(w + b"\n" for w in words))
    r = cli("run", spec, *mode_cli_args(execution_mode, ring_dir), f"--input={src}", "--output=lines",
            cwd=str(Path(src.anchor)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == b"ALPHA\nGAMMA1\nEPS\n"  # up, then only odd last bytes
    assert "2 dropped" in r.stderr


def test_a_function_that_fits_no_form_is_refused_at_startup(execution_mode: str, tmp_path: Path, ring_dir: Path,
                                                            cli: Any, write_stage_module: Callable[[str], str]) -> None:
    mod = write_stage_module(STAGES)
    spec = tmp_path / "three.kv"
    spec.write_text(chain_spec_text(execution_mode, [f"py:{mod}:up", f"py:{mod}:three"]))
    r = cli("run", spec, *mode_cli_args(execution_mode, ring_dir), "--input-ascii=hi")
    assert r.returncode == 3, r.stderr
    where = "pipeline.roles.1.resolver_key" if execution_mode.startswith("lanegraph") else \
        "pipeline.stages.1.resolver_key"
    assert where in r.stderr and "takes 3 positional arguments" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not ring_dir.exists()


BAD = {
    "returns_int": ("returned int; a map stage returns bytes, bytearray, memoryview or None", 0),
    "too_big": ("returned 300 bytes, more than slot_bytes=64", 0),
    "picky": ("ValueError: no thanks", 3),
    "scribble": ("cannot modify read-only memory", 0),
    "wrong_length": ("returned 1002; expected a length in 0..64 or DROP", 0),
}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_a_broken_stage_is_named_and_nothing_before_it_is_lost(execution_mode: str, bad: str, tmp_path: Path,
                                                               ring_dir: Path,
                                                               write_stage_module: Callable[[str], str]) -> None:
    mod = write_stage_module(STAGES)
    spec = tmp_path / "bad.kv"
    spec.write_text(chain_spec_text(execution_mode, [f"py:{mod}:up", f"py:{mod}:{bad}"]))
    problem, fails_at = BAD[bad]
    messages = [b"m0", b"m1", b"m2", b"bad", b"m4", b"m5"]
    if bad == "picky":
        messages = [b"m0", b"m1", b"m2", b"BAD", b"m4", b"m5"]  # `up` runs first
        spec.write_text(chain_spec_text(execution_mode, [f"py:{mod}:{bad}", f"py:{mod}:up"]))
        messages[3] = b"bad"
    p = _open(execution_mode, spec, ring_dir, tmp_path)
    try:
        with pytest.raises(PipelineFailed) as info:
            p.publish_many(messages)
            p.close()
    finally:
        p.abort()
    text = str(info.value)
    stage = "stage role 's0'" if bad == "picky" else "stage role 's1'"
    if not execution_mode.startswith("lanegraph"):
        stage = "stage 0 's0'" if bad == "picky" else "stage 1 's1'"
    assert stage in text and f"on message {fails_at}" in text and problem in text, text
    got = list(p.outputs())
    assert got == [m.upper() for m in messages[:fails_at]]
    assert not ring_dir.exists()


def test_forms_are_read_from_the_function() -> None:
    def m(msg: bytes) -> bytes:
        return msg

    def ip(slot: memoryview, length: int) -> int:
        return length

    @stage(readonly=True)
    def f(msg: bytes) -> None:
        return None

    ro = stage(readonly=True)(ip)
    assert [stage_form(m), stage_form(f), stage_form(ro)] == ["map", "filter", "readonly"]
    assert stage_form(lambda slot, n: n) == "inplace"
    assert stage_form(lambda msg, extra=None: msg) == "map"  # one required argument
    for bad in (lambda: 1, lambda a, b, c: 1, lambda *a: 1):
        with pytest.raises(StageContractError):
            stage_form(bad)

    class Opaque:  # a callable whose signature cannot be read (as some C extensions' are)
        __signature__ = "unknown"

        def __call__(self, *args: Any) -> Any:
            return args[0]

    with pytest.raises(StageContractError, match="cannot be inspected"):
        stage_form(Opaque())
    assert stage_form(stage(form="inplace")(Opaque())) == "inplace"
    with pytest.raises(StageContractError, match="not a module-level function"):
        py_key(lambda msg: msg)
    assert py_key(test_forms_are_read_from_the_function) == f"py:{__name__}:test_forms_are_read_from_the_function"


@pytest.mark.parametrize("sp", [True, False])
def test_function_objects_give_their_py_key_in_the_python_api(sp: bool, tmp_path: Path, ring_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             write_stage_module: Callable[[str], str]) -> None:
    mod = importlib.import_module(_importable(write_stage_module, monkeypatch, tmp_path))
    with Pipeline.chain(mod.up, mod.odd_only, name="fnchain", sp=sp, ring_path=str(ring_dir), wait="block") as p:
        p.publish_many([b"ab1", b"cd2", b"ef3"])
    assert list(p.outputs()) == [b"AB1", b"EF3"]
    assert p.spec.stages[0].resolver_key == f"py:{mod.__name__}:up"


def test_lanegraph_builder_takes_function_objects(tmp_path: Path, ring_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                  write_stage_module: Callable[[str], str]) -> None:
    from byteor import LaneGraphBuilder

    mod = importlib.import_module(_importable(write_stage_module, monkeypatch, tmp_path))
    spec = (LaneGraphBuilder("fnroles").lane("a", "events").lane("b", "events").lane("c", "events")
            .ingress("in", "a").egress("out", "c")
            .role("u", "stage", inputs=["a"], outputs=["b"], fn=mod.up)
            .role("o", "stage", inputs=["b"], outputs=["c"], fn=mod.odd_only).build())
    with Pipeline.open(spec, ring_path=str(ring_dir), wait="block", journal_dir=str(tmp_path / "j")) as p:
        p.publish_many([b"x1", b"y2", b"z3"])
    assert list(p.outputs()) == [b"X1", b"Z3"]


def _importable(write: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    name = write(STAGES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_stages_defined_in_a_script_run_in_stage_processes(tmp_path: Path, ring_dir: Path) -> None:
    """Functions of the program's own ``__main__`` reach the stage processes (imported under another
    name, so the script's ``if __name__ == "__main__":`` block does not run again there)."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from byteor import Pipeline

        def shout(msg):
            return msg.upper() + b"!"

        if __name__ == "__main__":
            with Pipeline.chain(shout, name="script", ring_path={str(ring_dir)!r}, wait="block") as p:
                p.publish_many([b"one", b"two"])
            sys.stdout.write(b",".join(p.outputs()).decode())
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False,
                       cwd=str(tmp_path), env={"PATH": str(BIN)})
    assert (r.returncode, r.stdout) == (0, "ONE!,TWO!"), r.stderr


def test_unimportable_or_missing_function_is_a_spec_error(tmp_path: Path,
                                                          write_stage_module: Callable[[str], str]) -> None:
    mod = write_stage_module(STAGES)
    for key, why in ((f"py:{mod}:nope", "has no callable 'nope'"), ("py:no_such_mod_zz:f", "cannot import")):
        spec = tmp_path / "x.kv"
        spec.write_text(chain_spec_text("sp", [key]))
        with pytest.raises(SpecError, match=why):
            Pipeline.open(spec, sp=True)
