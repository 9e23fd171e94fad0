"""validate_v1: one failing case per rule (docs/spec.md rules plus sanity rules), each checking the exact
key named, through the function, the in-process CLI (exit 3, key on stderr) and, for a representative
set, the installed ``byteor`` console script."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from byteor import SpecDecodeError, SpecValidationError
from byteor.cli import main
from byteor.spec import decode_kv, validate_v1
from byteor.spec.families import check_resolver_key, known_families
from byteor.spec.model import BytesKey, LaneGraphSpecV1, LaneV1, RoleV1, SingleRingSpecV1, StageV1
from byteor.spec.validate import check_v1

ROOT = Path(__file__).resolve().parent.parent
BYTEOR = Path(sys.executable).parent / "byteor"

SR = """pipeline.name=demo
pipeline.target=SingleRing
pipeline.stages.0.id=a
pipeline.stages.1.id=b
pipeline.stages.1.op=add_u8
pipeline.stages.1.depends_on.0=0
"""

LG = """pipeline.name=graph
pipeline.target=LaneGraph
pipeline.lanes.0.name=in
pipeline.lanes.0.kind=events
pipeline.lanes.1.name=out
pipeline.lanes.1.kind=events
pipeline.endpoints.0.name=src
pipeline.endpoints.0.direction=ingress
pipeline.endpoints.0.lane=in
pipeline.endpoints.1.name=dst
pipeline.endpoints.1.direction=egress
pipeline.endpoints.1.lane=out
pipeline.roles.0.name=work
pipeline.roles.0.kind=stage
pipeline.roles.0.inputs.0=in
pipeline.roles.0.outputs.0=out
"""


def _edit(base: str, remove: tuple[str, ...] = (), **set_: str) -> str:
    """``base`` with keys removed and keys set (``__`` in a kwarg stands for ``.``)."""
    lines = [ln for ln in base.splitlines() if ln.split("=", 1)[0] not in remove]
    updates = {k.replace("__", "."): v for k, v in set_.items()}
    out = []
    for ln in lines:
        key = ln.split("=", 1)[0]
        if key in updates:
            out.append(f"{key}={updates.pop(key)}")
        else:
            out.append(ln)
    out += [f"{k}={v}" for k, v in updates.items()]
    return "\n".join(out) + "\n"


def _stage(i: int, **fields: str) -> dict[str, str]:
    return {f"pipeline__stages__{i}__{k}": v for k, v in fields.items()}


# (case id, spec text, the key the issue must name)
RULES: list[tuple[str, str, str]] = [
    ("name-bad-chars", _edit(SR, pipeline__name="has space"), "pipeline.name"),
    ("name-empty", _edit(SR, pipeline__name=""), "pipeline.name"),
    (
        "shards-zero",
        _edit(SR, pipeline__constraints__shards="0", pipeline__constraints__ordering="unordered"),
        "pipeline.constraints.shards",
    ),
    ("no-stages", "pipeline.name=x\npipeline.target=SingleRing\n", "pipeline.stages"),
    ("five-stages", SR + "".join(f"pipeline.stages.{i}.id=s{i}\n" for i in range(2, 5)), "pipeline.stages.4"),
    ("duplicate-id", _edit(SR, **_stage(1, id="a")), "pipeline.stages.1.id"),
    (
        "self-dependency",
        _edit(SR, **_stage(0, op="add_u8"), pipeline__stages__0__depends_on__0="0"),
        "pipeline.stages.0.depends_on.0",
    ),
    (
        "forward-reference",
        _edit(SR, pipeline__stages__0__depends_on__0="1"),
        "pipeline.stages.0.depends_on.0",
    ),
    (
        "not-increasing",
        SR + "pipeline.stages.2.id=c\npipeline.stages.2.depends_on.0=1\npipeline.stages.2.depends_on.1=0\n",
        "pipeline.stages.2.depends_on.1",
    ),
    (
        "duplicate-dependency",
        SR + "pipeline.stages.2.id=c\npipeline.stages.2.depends_on.0=1\npipeline.stages.2.depends_on.1=1\n",
        "pipeline.stages.2.depends_on.1",
    ),
    (
        "undeclared-deps",
        _edit(SR, remove=("pipeline.stages.1.depends_on.0",)),
        "pipeline.stages.1.depends_on",
    ),
    ("producer-mpmc", _edit(SR, pipeline__constraints__producer="mpmc"), "pipeline.constraints.producer"),
    (
        "scheduling-work-queue",
        _edit(SR, pipeline__constraints__scheduling="work_queue"),
        "pipeline.constraints.scheduling",
    ),
    (
        "strict-with-shards",
        _edit(
            SR,
            pipeline__constraints__shards="2",
            pipeline__constraints__ordering="strict",
            pipeline__constraints__shard_key="bytes:0:1",
        ),
        "pipeline.constraints.ordering",
    ),
    (
        "per-key-without-shard-key",
        _edit(SR, pipeline__constraints__shards="2"),
        "pipeline.constraints.shard_key",
    ),
    (
        "shard-key-zero-length",
        _edit(SR, pipeline__constraints__shards="2", pipeline__constraints__shard_key="bytes:0:0"),
        "pipeline.constraints.shard_key",
    ),
    ("resolver-without-key", _edit(SR, **_stage(1, op="resolver")), "pipeline.stages.1.resolver_key"),
    (
        "resolver-unknown-family",
        _edit(SR, **_stage(1, op="resolver", resolver_key="smtp:x")),
        "pipeline.stages.1.resolver_key",
    ),
    (
        "resolver-bad-http-url",
        _edit(SR, **_stage(1, op="resolver", resolver_key="http_post:ftp://h/x")),
        "pipeline.stages.1.resolver_key",
    ),
    (
        "resolver-http-no-host",
        _edit(SR, **_stage(1, op="resolver", resolver_key="http_post:http:///x")),
        "pipeline.stages.1.resolver_key",
    ),
    (
        "resolver-exec-no-program",
        _edit(SR, **_stage(1, op="resolver", resolver_key="exec:|arg")),
        "pipeline.stages.1.resolver_key",
    ),
    (
        "resolver-dataguard-no-profile",
        _edit(SR, **_stage(1, op="resolver", resolver_key="dataguard:")),
        "pipeline.stages.1.resolver_key",
    ),
    (
        "resolver-py-shape",
        _edit(SR, **_stage(1, op="resolver", resolver_key="py:module.only")),
        "pipeline.stages.1.resolver_key",
    ),
    ("capacity-not-power-of-two", _edit(SR, pipeline__ring__capacity="1000"), "pipeline.ring.capacity"),
    ("capacity-one", _edit(SR, pipeline__ring__capacity="1"), "pipeline.ring.capacity"),
    ("slot-bytes-zero", _edit(SR, pipeline__ring__slot_bytes="0"), "pipeline.ring.slot_bytes"),
    ("ingress-empty", _edit(SR, pipeline__ingress=""), "pipeline.ingress"),
    ("stage-id-empty", _edit(SR, **_stage(0, id="")), "pipeline.stages.0.id"),
    # LaneGraph
    ("lane-name-duplicate", _edit(LG, pipeline__lanes__1__name="in"), "pipeline.lanes.1.name"),
    ("lane-name-empty", _edit(LG, pipeline__lanes__1__name=""), "pipeline.lanes.1.name"),
    ("endpoint-unknown-lane", _edit(LG, pipeline__endpoints__1__lane="nope"), "pipeline.endpoints.1.lane"),
    ("endpoint-name-duplicate", _edit(LG, pipeline__endpoints__1__name="src"), "pipeline.endpoints.1.name"),
    ("role-unknown-input", _edit(LG, pipeline__roles__0__inputs__0="nope"), "pipeline.roles.0.inputs.0"),
    ("role-unknown-output", _edit(LG, pipeline__roles__0__outputs__0="nope"), "pipeline.roles.0.outputs.0"),
    ("role-name-empty", _edit(LG, pipeline__roles__0__name=""), "pipeline.roles.0.name"),
    ("stage-two-inputs", _edit(LG, pipeline__roles__0__inputs__1="out"), "pipeline.roles.0.inputs"),
    ("merge-one-input", _edit(LG, pipeline__roles__0__kind="merge"), "pipeline.roles.0.inputs"),
    (
        "router-one-output",
        _edit(LG, pipeline__roles__0__kind="router", pipeline__roles__0__route="round_robin"),
        "pipeline.roles.0.outputs",
    ),
    (
        "router-without-route",
        LG + "pipeline.lanes.2.name=x\npipeline.lanes.2.kind=journal\n"
        "pipeline.roles.1.name=r\npipeline.roles.1.kind=router\npipeline.roles.1.inputs.0=out\n"
        "pipeline.roles.1.outputs.0=x\npipeline.roles.1.outputs.1=in\n",
        "pipeline.roles.1.route",
    ),
    ("fanout-without-width", _edit(LG, pipeline__lanes__1__kind="fanout"), "pipeline.lanes.1.fanout"),
    (
        "fanout-too-wide",
        _edit(LG, pipeline__lanes__1__kind="fanout", pipeline__lanes__1__fanout="5"),
        "pipeline.lanes.1.fanout",
    ),
    (
        "fanout-zero",
        _edit(LG, pipeline__lanes__1__kind="fanout", pipeline__lanes__1__fanout="0"),
        "pipeline.lanes.1.fanout",
    ),
    ("lane-capacity", _edit(LG, pipeline__lanes__0__capacity="3"), "pipeline.lanes.0.capacity"),
    ("lane-slot-bytes", _edit(LG, pipeline__lanes__0__slot_bytes="0"), "pipeline.lanes.0.slot_bytes"),
    (
        "journal-segment-small",
        _edit(LG, pipeline__lanes__1__kind="journal", pipeline__lanes__1__segment_bytes="100"),
        "pipeline.lanes.1.segment_bytes",
    ),
    (
        "journal-segment-below-slot",
        _edit(
            LG,
            pipeline__lanes__1__kind="journal",
            pipeline__lanes__1__slot_bytes="8192",
            pipeline__lanes__1__segment_bytes="8195",
        ),
        "pipeline.lanes.1.segment_bytes",
    ),
    (
        "events-two-writers",
        _edit(
            LG,
            pipeline__endpoints__0__lane="out",
            pipeline__endpoints__1__lane="in",
            pipeline__endpoints__1__direction="ingress",
        ),
        "pipeline.lanes.1",
    ),
    ("events-no-reader", _edit(LG, pipeline__endpoints__1__direction="ingress"), "pipeline.lanes.1"),
    (
        "events-two-readers",
        LG + "pipeline.endpoints.2.name=tap\npipeline.endpoints.2.direction=egress\npipeline.endpoints.2.lane=out\n",
        "pipeline.lanes.1",
    ),
    (
        "fanout-more-readers-than-width",
        _edit(LG, pipeline__lanes__1__kind="fanout", pipeline__lanes__1__fanout="1")
        + "pipeline.endpoints.2.name=tap\npipeline.endpoints.2.direction=egress\n"
        + "pipeline.endpoints.2.lane=out\n",
        "pipeline.lanes.1",
    ),
    (
        "mpsc-no-writer",
        _edit(
            LG,
            pipeline__lanes__0__kind="mpsc",
            pipeline__endpoints__0__lane="out",
            pipeline__endpoints__1__lane="in",
            pipeline__endpoints__1__direction="egress",
        ),
        "pipeline.lanes.0",
    ),
    (
        "cycle",
        LG + "pipeline.lanes.2.name=loop\npipeline.lanes.2.kind=mpsc\n"
        "pipeline.roles.1.name=back\npipeline.roles.1.kind=bridge\npipeline.roles.1.inputs.0=loop\n"
        "pipeline.roles.1.outputs.0=loop\n",
        "pipeline.roles.1",
    ),
    (
        "unreachable-lane",
        LG + "pipeline.lanes.2.name=island\npipeline.lanes.2.kind=journal\n"
        "pipeline.roles.1.name=w\npipeline.roles.1.kind=bridge\npipeline.roles.1.inputs.0=island\n"
        "pipeline.roles.1.outputs.0=island2\npipeline.lanes.3.name=island2\npipeline.lanes.3.kind=journal\n",
        "pipeline.lanes.2",
    ),
    (
        "stage-role-unknown-family",
        _edit(LG, pipeline__roles__0__op="resolver", pipeline__roles__0__resolver_key="nope:x"),
        "pipeline.roles.0.resolver_key",
    ),
    ("no-lanes", "pipeline.name=g\npipeline.target=LaneGraph\n", "pipeline.lanes"),
]


@pytest.mark.parametrize(("text", "key"), [(t, k) for _, t, k in RULES], ids=[c for c, _, _ in RULES])
def test_each_rule_names_its_key(text: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        spec = decode_kv(text)
    except SpecDecodeError as exc:  # a few rules are already enforced while decoding (required keys)
        assert key in [i.key for i in exc.issues], exc.issues
    else:
        issues = validate_v1(spec)
        assert key in [i.key for i in issues], issues
        with pytest.raises(SpecValidationError) as err:
            check_v1(spec, path="x.kv")
        assert err.value.exit_code == 3
        assert len(err.value.issues) == len(issues)
    path = tmp_path / "spec.kv"
    path.write_text(text)
    assert main(["validate", str(path)]) == 3
    captured = capsys.readouterr()
    assert f"`{key}`" in captured.err
    assert captured.out == ""
    assert "Traceback" not in captured.err


REPRESENTATIVE = [
    "forward-reference",
    "producer-mpmc",
    "per-key-without-shard-key",
    "resolver-unknown-family",
    "five-stages",
    "cycle",
    "events-two-readers",
    "fanout-too-wide",
]


@pytest.mark.parametrize("case", REPRESENTATIVE)
def test_console_script_exit_3_names_key(case: str, tmp_path: Path) -> None:
    _, text, key = next(r for r in RULES if r[0] == case)
    path = tmp_path / "spec.kv"
    path.write_text(text)
    proc = subprocess.run(
        [str(BYTEOR), "validate", f"--spec={path}"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 3, proc.stderr
    assert f"`{key}`" in proc.stderr
    assert str(path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_all_issues_reported_at_once() -> None:
    text = _edit(
        SR,
        pipeline__constraints__producer="mpmc",
        pipeline__constraints__scheduling="work_queue",
        pipeline__ring__capacity="3",
        pipeline__name="bad name",
    )
    keys = {i.key for i in validate_v1(decode_kv(text))}
    assert {
        "pipeline.constraints.producer",
        "pipeline.constraints.scheduling",
        "pipeline.ring.capacity",
        "pipeline.name",
    } <= keys


def test_published_example_and_examples_validate() -> None:
    for path in sorted((ROOT / "examples").glob("*.kv")):
        assert validate_v1(decode_kv(path.read_bytes())) == [], path


def test_valid_shapes_pass() -> None:
    ok = [
        _edit(SR, pipeline__constraints__shards="4", pipeline__constraints__shard_key="bytes:0:4"),
        _edit(SR, pipeline__constraints__shards="3", pipeline__constraints__ordering="unordered"),
        _edit(SR, **_stage(1, op="resolver", resolver_key="http_post:https://api.example.com/hook")),
        _edit(SR, **_stage(1, op="resolver", resolver_key="exec:/bin/cat|-n")),
        _edit(SR, **_stage(1, op="resolver", resolver_key="py:os.path:basename")),
        _edit(SR, **_stage(1, op="resolver", resolver_key="dataguard:pii")),
        _edit(LG, pipeline__lanes__1__kind="fanout", pipeline__lanes__1__fanout="1"),
        _edit(LG, pipeline__lanes__1__kind="journal"),
        _edit(LG, pipeline__lanes__0__kind="mpsc"),
    ]
    for text in ok:
        assert validate_v1(decode_kv(text)) == [], text


def test_python_built_specs_are_held_to_the_same_rules() -> None:
    spec = SingleRingSpecV1("p", (StageV1("a", op="copy"), StageV1("b", delta=3)))
    keys = {i.key for i in validate_v1(spec)}
    assert {"pipeline.stages.0.op", "pipeline.stages.1.delta"} <= keys
    lg = decode_kv(LG)
    assert isinstance(lg, LaneGraphSpecV1)
    bad_lane = replace(lg, lanes=(*lg.lanes[:1], LaneV1("out", "events", fanout=2, segment_bytes=4096)))
    assert {"pipeline.lanes.1.fanout", "pipeline.lanes.1.segment_bytes"} <= {i.key for i in validate_v1(bad_lane)}
    bridge_with_op = replace(
        lg, roles=(RoleV1("work", "bridge", ("in",), ("out",), op="add_u8", route=BytesKey(0, 1)),)
    )
    keys = {i.key for i in validate_v1(bridge_with_op)}
    assert {"pipeline.roles.0.op", "pipeline.roles.0.route"} <= keys
    foreign: object = "not a spec"
    assert "pipeline.target" in {i.key for i in validate_v1(foreign)}  # type: ignore[arg-type]


def test_families() -> None:
    assert known_families()[:4] == ("http_post", "exec", "dataguard", "py")
    assert check_resolver_key("http_post:https://h.example/x") is None
    assert check_resolver_key("http_post:https://h.example:99999/x") is not None
    assert check_resolver_key("exec:prog\x00") is not None
    assert check_resolver_key("exec") is not None
    assert check_resolver_key("") is not None
    assert check_resolver_key(None) is not None
    msg = check_resolver_key("ftp:x")
    assert msg is not None and "unknown resolver family" in msg and "http_post" in msg


def test_credentials_in_an_http_post_url_are_rejected_and_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for url in ("https://user:hunter2@api.example.com/x", "ftp://user:hunter2@api.example.com/x"):
        path = tmp_path / "spec.kv"
        path.write_text(_edit(SR, **_stage(1, op="resolver", resolver_key=f"http_post:{url}")))
        assert main(["validate", str(path)]) == 3
        err = capsys.readouterr().err
        assert "`pipeline.stages.1.resolver_key`" in err and "hunter2" not in err


def test_entry_point_families(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution that declares ``byteor.stages`` entry points adds resolver families."""
    from byteor.spec import families

    dist = tmp_path / "byteor_fake_stages-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: byteor-fake-stages\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[byteor.stages]\nfakefam = fake_stage_mod:resolve\nbrokenfam = fake_stage_missing:resolve\n"
    )
    (tmp_path / "fake_stage_mod.py").write_text("def resolve(key, ctx):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    families.entry_point_families.cache_clear()
    try:
        assert "fakefam" in known_families() and "brokenfam" in known_families()
        assert check_resolver_key("fakefam:anything") is None
        assert families.resolvable("fakefam:anything") is None
        why = families.resolvable("brokenfam:x")
        assert why is not None and "fails to load" in why
        spec = decode_kv(_edit(SR, **_stage(1, op="resolver", resolver_key="fakefam:x")))
        assert validate_v1(spec) == []
    finally:
        monkeypatch.undo()
        families.entry_point_families.cache_clear()
    assert "fakefam" not in known_families()
