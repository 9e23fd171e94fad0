"""Stage registry: builtins, py:, entry points, action families; failures name the stage's key."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Iterator

import pytest

from byteor import PolicyRefused, SpecError, decode_kv
from byteor._stage import ResolvedStage, StageContext
from byteor.runtime import Pipeline
from byteor.runtime.registry import known_families, resolve_stage, resolve_stages
from byteor.runtime.support import unsupported_reasons
from byteor.spec.families import entry_point_families
from byteor.spec.model import SingleRingSpecV1, StageV1

CTX = StageContext()


def test_builtins_carry_their_native_kernel() -> None:
    ident = resolve_stage(StageV1(id="a"), 0, CTX)
    assert (ident.builtin, ident.modifies) == (("identity", 0), False)
    add = resolve_stage(StageV1(id="b", op="add_u8", delta=250), 1, CTX)
    assert (add.builtin, add.modifies) == (("add_u8", 250), True)
    buf = bytearray(b"\x00\x06\x10zz")
    assert add.fn(memoryview(buf), 3) == 3
    assert buf == bytearray(b"\xfa\x00\x0azz")  # only the message, mod 256


@pytest.fixture(scope="module")
def stage_pkg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real module plus a dist-info declaring ``byteor.stages`` entry points, on sys.path and PYTHONPATH."""
    tmp_path = tmp_path_factory.mktemp("stages")
    mod = f"regstages_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent(f"""
        from byteor._stage import ResolvedStage

        def upper(slot, n):
            slot[:n] = bytes(slot[:n]).upper()
            return n

        def peek(slot, n):
            return n
        peek.byteor_modifies = False

        def prefix_factory(arg, ctx):
            tag = arg.encode()
            def fn(slot, n):
                m = min(len(slot), n + len(tag))
                slot[len(tag):m] = bytes(slot[:m - len(tag)])
                slot[:len(tag)] = tag
                return m
            return ResolvedStage(key="prefix:" + arg, fn=fn, modifies=True, family="prefix{mod[-8:]}")

        def broken_factory(arg, ctx):
            return "not a stage"
    """))
    dist = tmp_path / f"{mod}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {mod}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[byteor.stages]\nprefix{mod[-8:]} = {mod}:prefix_factory\nbroken{mod[-8:]} = {mod}:broken_factory\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(tmp_path))
        mp.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
        entry_point_families.cache_clear()  # the validator caches the installed families
        yield mod
    entry_point_families.cache_clear()


def test_py_family(stage_pkg: str) -> None:
    st = resolve_stage(StageV1(id="u", op="resolver", resolver_key=f"py:{stage_pkg}:upper"), 0, CTX)
    assert (st.family, st.modifies) == ("py", True)
    peek = resolve_stage(StageV1(id="p", op="resolver", resolver_key=f"py:{stage_pkg}:peek"), 0, CTX)
    assert peek.modifies is False


@pytest.mark.parametrize(("key", "why"), [
    ("py:justmodule", "expected py:<module>:<function>"),
    ("py:no_such_mod_zz:f", "cannot import module"),
    ("py:os:no_such_function_zz", "has no callable"),
    ("nosuchfamily:x", "unknown resolver family 'nosuchfamily'"),
    ("nocolon", "has no family"),
])
def test_resolution_failures_name_the_key(key: str, why: str) -> None:
    with pytest.raises(SpecError, match=r"pipeline\.stages\.3\.resolver_key") as info:
        resolve_stage(StageV1(id="x", op="resolver", resolver_key=key), 3, CTX)
    assert why in str(info.value)
    assert info.value.exit_code == 3


def test_entry_point_families(stage_pkg: str) -> None:
    fam = f"prefix{stage_pkg[-8:]}"
    assert fam in known_families()
    st = resolve_stage(StageV1(id="p", op="resolver", resolver_key=f"{fam}:AB"), 0, CTX)
    assert isinstance(st, ResolvedStage) and st.key == "prefix:AB"
    with pytest.raises(SpecError, match="returned str, not a ResolvedStage"):
        resolve_stage(StageV1(id="b", op="resolver", resolver_key=f"broken{stage_pkg[-8:]}:x"), 0, CTX)


@pytest.mark.parametrize("sp", [True, False])
def test_entry_point_and_py_stages_run_in_both_executors(stage_pkg: str, sp: bool) -> None:
    fam = f"prefix{stage_pkg[-8:]}"
    spec = decode_kv(textwrap.dedent(f"""\
        pipeline.name=ep
        pipeline.target=SingleRing
        pipeline.ring.slot_bytes=8
        pipeline.stages.0.id=up
        pipeline.stages.0.op=resolver
        pipeline.stages.0.resolver_key=py:{stage_pkg}:upper
        pipeline.stages.1.id=pre
        pipeline.stages.1.op=resolver
        pipeline.stages.1.resolver_key={fam}:<
        pipeline.stages.1.depends_on.0=0
    """))
    ring = f"/dev/shm/byteor/regtest-{uuid.uuid4().hex[:10]}"
    with Pipeline.open(spec, sp=sp, ring_path=ring, wait="block") as p:
        p.publish_many([b"abc", b"xyz1234"])
    assert list(p.outputs()) == [b"<ABC", b"<XYZ1234"]
    assert not os.path.exists(ring)


def test_action_stage_without_a_gate_decision_is_refused() -> None:
    stage = StageV1(id="post", op="resolver", resolver_key="http_post:http://127.0.0.1:9/x")
    with pytest.raises(PolicyRefused):
        resolve_stage(stage, 0, CTX)
    dry = resolve_stage(stage, 0, StageContext(dry_run=True))
    assert (dry.side_effect, dry.modifies) == (True, False)


def test_resolve_stages_closes_the_resolved_on_failure(stage_pkg: str) -> None:
    spec = decode_kv(textwrap.dedent(f"""\
        pipeline.name=ep
        pipeline.target=SingleRing
        pipeline.stages.0.id=up
        pipeline.stages.0.op=resolver
        pipeline.stages.0.resolver_key=py:{stage_pkg}:upper
        pipeline.stages.1.id=bad
        pipeline.stages.1.op=resolver
        pipeline.stages.1.resolver_key=py:{stage_pkg}:missing
        pipeline.stages.1.depends_on.0=0
    """))
    assert isinstance(spec, SingleRingSpecV1)
    with pytest.raises(SpecError, match=r"pipeline\.stages\.1\.resolver_key"):
        resolve_stages(spec, CTX)


def test_unsupported_reasons() -> None:
    spec = decode_kv("pipeline.name=a\npipeline.target=SingleRing\npipeline.stages.0.id=x\n")
    assert unsupported_reasons(spec) == [] and unsupported_reasons(spec, sp=True) == []
    mpmc = decode_kv("pipeline.name=a\npipeline.target=SingleRing\npipeline.constraints.producer=mpmc\n"
                     "pipeline.stages.0.id=x\n")
    assert any("producer=mpmc" in r for r in unsupported_reasons(mpmc))
