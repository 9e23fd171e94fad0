"""spec.kv codec: one case per decode error (exit 3, line and key named), the canonical form of the
published example, and hypothesis properties of encode/decode/hash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from byteor import SpecDecodeError, SpecError, UsageError
from byteor.cli import main
from byteor.spec import canonical_bytes, decode_kv, encode_kv, load_spec_file, spec_hash
from byteor.spec.kv import MAX_SPEC_BYTES, canonical_pairs
from byteor.spec.model import (
    ENDPOINT_DIRECTIONS,
    LANE_KINDS,
    ON_FULL,
    ORDERINGS,
    PRODUCERS,
    ROLE_KINDS,
    SCHEDULINGS,
    BytesKey,
    EndpointV1,
    LaneGraphSpecV1,
    LaneV1,
    PipelineSpecV1,
    RoleV1,
    SingleRingSpecV1,
    StageV1,
)

ROOT = Path(__file__).resolve().parent.parent
BYTEOR = Path(sys.executable).parent / "byteor"
SR = b"pipeline.name=demo\npipeline.target=SingleRing\npipeline.stages.0.id=a\n"

# (case id, raw bytes, key named in the error (or None), 1-based line or None)
DECODE_ERRORS: list[tuple[str, bytes, str | None, int | None]] = [
    ("duplicate-key", SR + b"pipeline.name=again\n", "pipeline.name", 4),
    ("unknown-key", SR + b"pipeline.colour=blue\n", "pipeline.colour", 4),
    ("unknown-stage-field", SR + b"pipeline.stages.0.colour=x\n", "pipeline.stages.0.colour", 4),
    ("other-target-key", SR + b"pipeline.on_full=block\n", "pipeline.on_full", 4),
    ("other-target-array", SR + b"pipeline.lanes.0.name=x\n", "pipeline.lanes.0.name", 4),
    ("inapplicable-delta", SR + b"pipeline.stages.0.delta=3\n", "pipeline.stages.0.delta", 4),
    (
        "inapplicable-resolver-key",
        SR + b"pipeline.stages.0.resolver_key=exec:x\n",
        "pipeline.stages.0.resolver_key",
        4,
    ),
    ("index-gap", SR + b"pipeline.stages.2.id=c\n", "pipeline.stages.2", 4),
    (
        "nested-index-gap",
        SR + b"pipeline.stages.1.id=b\npipeline.stages.1.depends_on.1=0\n",
        "pipeline.stages.1.depends_on.1",
        5,
    ),
    ("leading-zero-index", SR + b"pipeline.stages.01.id=b\n", "pipeline.stages.01.id", 4),
    ("wrong-type-int", SR + b"pipeline.constraints.shards=two\n", "pipeline.constraints.shards", 4),
    ("wrong-type-signed", SR + b"pipeline.ring.capacity=+8\n", "pipeline.ring.capacity", 4),
    ("wrong-type-enum", SR + b"pipeline.constraints.ordering=fifo\n", "pipeline.constraints.ordering", 4),
    (
        "wrong-type-delta-range",
        SR + b"pipeline.stages.0.op=add_u8\npipeline.stages.0.delta=256\n",
        "pipeline.stages.0.delta",
        5,
    ),
    (
        "wrong-type-shard-key",
        SR + b"pipeline.constraints.shard_key=bytes:0\n",
        "pipeline.constraints.shard_key",
        4,
    ),
    ("missing-equals", SR + b"pipeline.ring.capacity\n", "pipeline.ring.capacity", 4),
    ("missing-target", b"pipeline.name=x\n", "pipeline.target", None),
    ("bad-target", b"pipeline.name=x\npipeline.target=Ring\n", "pipeline.target", 2),
    ("missing-stage-id", SR + b"pipeline.stages.1.op=identity\n", "pipeline.stages.1.id", 4),
    ("non-utf8", SR + b"pipeline.ingress=caf\xe9\n", "pipeline.ingress", 4),
    ("bom", b"\xef\xbb\xbf" + SR, "pipeline.name", 1),
    ("crlf", SR.replace(b"\n", b"\r\n"), "pipeline.name", 1),
    ("nul", SR + b"pipeline.ingress=a\x00b\n", "pipeline.ingress", 4),
]


@pytest.mark.parametrize(
    ("raw", "key", "line"), [c[1:] for c in DECODE_ERRORS], ids=[c[0] for c in DECODE_ERRORS]
)
def test_each_decode_error_names_line_and_key(
    raw: bytes, key: str, line: int | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SpecDecodeError) as err:
        decode_kv(raw)
    assert any(i.key == key and i.line == line for i in err.value.issues), err.value.issues
    path = tmp_path / "spec.kv"
    path.write_bytes(raw)
    assert main(["validate", f"--spec={path}"]) == 3
    stderr = capsys.readouterr().err
    assert f"`{key}`" in stderr
    if line is not None:
        assert f"line {line}:" in stderr
    assert "Traceback" not in stderr


def test_oversize_is_refused_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.kv"
    path.write_bytes(SR + b"# " + b"x" * MAX_SPEC_BYTES + b"\n")
    with pytest.raises(SpecDecodeError, match="1048576-byte limit"):
        load_spec_file(path)
    assert main(["validate", str(path)]) == 3
    stderr = capsys.readouterr().err
    assert str(path) in stderr and "limit" in stderr


REPRESENTATIVE = [
    "duplicate-key",
    "other-target-key",
    "index-gap",
    "leading-zero-index",
    "missing-equals",
    "non-utf8",
    "bom",
    "crlf",
]


@pytest.mark.parametrize("case", REPRESENTATIVE)
def test_console_script_decode_errors(case: str, tmp_path: Path) -> None:
    _, raw, key, _line = next(c for c in DECODE_ERRORS if c[0] == case)
    path = tmp_path / "spec.kv"
    path.write_bytes(raw)
    proc = subprocess.run(
        [str(BYTEOR), "validate", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 3
    assert f"`{key}`" in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.kv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_comments_blank_lines_and_verbatim_values() -> None:
    spec = decode_kv(
        b"# c\n\npipeline.name=x\npipeline.target=SingleRing\npipeline.ingress= spaced =\n"
        b"pipeline.stages.0.id=a\n"
    )
    assert isinstance(spec, SingleRingSpecV1)
    assert spec.ingress == " spaced ="
    text = encode_kv(spec)
    assert "#" not in text and "\n\n" not in text and text.endswith("\n")


def test_published_example_canonical_and_hash(capsys: pytest.CaptureFixture[str]) -> None:
    example = ROOT / "examples" / "example.kv"
    expected = (
        "pipeline.name=example\npipeline.target=SingleRing\npipeline.constraints.shards=1\n"
        "pipeline.constraints.ordering=strict\npipeline.constraints.producer=single\n"
        "pipeline.constraints.scheduling=dedicated\npipeline.constraints.shard_key=none\n"
        "pipeline.ring.capacity=1024\npipeline.ring.slot_bytes=256\npipeline.ingress=ingress\n"
        "pipeline.egress=egress\npipeline.stages.0.id=stage-a\npipeline.stages.0.op=identity\n"
        "pipeline.stages.1.id=stage-b\npipeline.stages.1.op=identity\n"
    )
    spec = load_spec_file(example)
    assert encode_kv(spec) == expected
    import hashlib

    digest = "sha256:" + hashlib.sha256(expected.encode()).hexdigest()
    assert spec_hash(spec) == digest
    assert main(["describe", "--canonical", str(example)]) == 0
    assert capsys.readouterr().out == expected
    assert main(["approval", "hash", f"--spec={example}"]) == 0
    assert capsys.readouterr().out == digest + "\n"
    # The canonical text is a fixed point.
    assert canonical_bytes(decode_kv(expected)) == expected.encode()


# --------------------------------------------------------------------------------------------------
# Hypothesis
# --------------------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_characters="\n\r\x00", blacklist_categories=("Cs",)), max_size=10)
_int = st.integers(min_value=0, max_value=2**63 - 1)
_small = st.integers(min_value=0, max_value=5000)
_bytes_key = st.builds(BytesKey, _small, _small)


@st.composite
def _stage(draw: st.DrawFn, index: int) -> StageV1:
    op = draw(st.sampled_from(("identity", "add_u8", "resolver")))
    deps = draw(st.lists(st.integers(0, 6), max_size=3))
    return StageV1(
        draw(_text),
        op,
        draw(st.integers(0, 255)) if op == "add_u8" else None,
        draw(_text) if op == "resolver" else None,
        tuple(deps),
    )


@st.composite
def single_rings(draw: st.DrawFn) -> SingleRingSpecV1:
    n = draw(st.integers(0, 5))
    return SingleRingSpecV1(
        name=draw(_text),
        stages=tuple(draw(_stage(i)) for i in range(n)),
        shards=draw(st.integers(0, 64)),
        ordering=draw(st.sampled_from(ORDERINGS)),
        producer=draw(st.sampled_from(PRODUCERS)),
        scheduling=draw(st.sampled_from(SCHEDULINGS)),
        shard_key=draw(st.none() | _bytes_key),
        capacity=draw(_int),
        slot_bytes=draw(_int),
        ingress=draw(_text),
        egress=draw(_text),
    )


@st.composite
def _lane(draw: st.DrawFn) -> LaneV1:
    kind = draw(st.sampled_from(LANE_KINDS))
    return LaneV1(
        draw(_text),
        kind,
        None if kind == "journal" else draw(_int),
        draw(_int),
        draw(st.integers(0, 9)) if kind == "fanout" else None,
        draw(_int) if kind == "journal" else None,
        draw(st.none() | st.sampled_from(ON_FULL)),
    )


@st.composite
def _role(draw: st.DrawFn) -> RoleV1:
    kind = draw(st.sampled_from(ROLE_KINDS))
    op = draw(st.sampled_from(("identity", "add_u8", "resolver"))) if kind == "stage" else None
    return RoleV1(
        draw(_text),
        kind,
        tuple(draw(st.lists(_text, max_size=3))),
        tuple(draw(st.lists(_text, max_size=3))),
        op,
        draw(st.integers(0, 255)) if op == "add_u8" else None,
        draw(_text) if op == "resolver" else None,
        draw(st.just("round_robin") | _bytes_key) if kind == "router" else None,
    )


@st.composite
def lane_graphs(draw: st.DrawFn) -> LaneGraphSpecV1:
    return LaneGraphSpecV1(
        draw(_text),
        tuple(draw(st.lists(_lane(), max_size=4))),
        tuple(
            draw(
                st.lists(
                    st.builds(EndpointV1, _text, st.sampled_from(ENDPOINT_DIRECTIONS), _text), max_size=3
                )
            )
        ),
        tuple(draw(st.lists(_role(), max_size=4))),
        draw(st.sampled_from(ON_FULL)),
    )


specs = single_rings() | lane_graphs()
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(specs)
def test_canonical_roundtrip(spec: PipelineSpecV1) -> None:
    text = encode_kv(spec)
    decoded = decode_kv(text)
    assert canonical_bytes(decoded) == canonical_bytes(spec)
    assert decoded == spec
    assert encode_kv(decoded) == text


def _defaults(spec: PipelineSpecV1) -> dict[str, str]:
    """Keys (as suffix patterns) whose canonical value is the default and may be omitted."""
    if isinstance(spec, SingleRingSpecV1):
        return {
            "pipeline.constraints.shards": "1",
            "pipeline.constraints.producer": "single",
            "pipeline.constraints.scheduling": "dedicated",
            "pipeline.constraints.shard_key": "none",
            "pipeline.ring.capacity": "1024",
            "pipeline.ring.slot_bytes": "256",
            "pipeline.ingress": "ingress",
            "pipeline.egress": "egress",
            ".op": "identity",
            ".delta": "1",
        }
    return {
        "pipeline.on_full": "block",
        ".capacity": "1024",
        ".slot_bytes": "256",
        ".segment_bytes": "67108864",
        ".op": "identity",
        ".delta": "1",
    }


def _droppable(spec: PipelineSpecV1, key: str, value: str) -> bool:
    if isinstance(spec, SingleRingSpecV1) and key == "pipeline.constraints.ordering":
        return value == ("strict" if spec.shards == 1 else "per_key")
    if isinstance(spec, SingleRingSpecV1) and key == "pipeline.constraints.shards":
        return False  # dropping shards also changes the ordering default; keep it simple
    for suffix, default in _defaults(spec).items():
        if (key == suffix or (suffix.startswith(".") and key.endswith(suffix))) and value == default:
            return True
    return False


@_SETTINGS
@given(specs, st.data())
def test_shuffle_and_dropped_defaults_keep_the_hash(spec: PipelineSpecV1, data: st.DataObject) -> None:
    pairs = canonical_pairs(spec)
    kept = [(k, v) for k, v in pairs if not (_droppable(spec, k, v) and data.draw(st.booleans()))]
    lines = [f"{k}={v}\n" for k, v in kept]
    lines = data.draw(st.permutations(lines))
    assert spec_hash(decode_kv("".join(lines))) == spec_hash(spec)


def _mutate(key: str, value: str) -> str | None:
    """A different value of the same type for ``key`` that keeps every other key applicable."""
    field = key.rsplit(".", 1)[-1] if not key.rsplit(".", 1)[-1].isdigit() else key.rsplit(".", 2)[-2]
    if field in ("name", "id", "resolver_key", "ingress", "egress", "lane", "inputs", "outputs"):
        return value + "x"
    if field == "delta":
        return str((int(value) + 1) % 256)
    if field in ("shards", "capacity", "slot_bytes", "segment_bytes", "depends_on", "fanout"):
        return str(int(value) + 1) if int(value) < 2**63 - 1 else str(int(value) - 1)
    domains = {
        "ordering": ORDERINGS,
        "producer": PRODUCERS,
        "scheduling": SCHEDULINGS,
        "on_full": ON_FULL,
        "direction": ENDPOINT_DIRECTIONS,
    }
    if field in domains:
        return next(d for d in domains[field] if d != value)
    if field in ("shard_key", "route") and value.startswith("bytes:"):
        off, length = value.split(":")[1:]
        return f"bytes:{off}:{int(length) + 1}"
    return None  # target, kind, op: changing them changes which keys apply


@_SETTINGS
@given(specs, st.data())
def test_changing_any_real_field_changes_the_hash(spec: PipelineSpecV1, data: st.DataObject) -> None:
    pairs = canonical_pairs(spec)
    i = data.draw(st.integers(0, len(pairs) - 1))
    key, value = pairs[i]
    new = _mutate(key, value)
    assume(new is not None)
    changed = "".join(f"{k}={new if j == i else v}\n" for j, (k, v) in enumerate(pairs))
    assert spec_hash(decode_kv(changed)) != spec_hash(spec)


_KEYS = [
    "pipeline.name",
    "pipeline.target",
    "pipeline.constraints.shards",
    "pipeline.constraints.ordering",
    "pipeline.constraints.shard_key",
    "pipeline.ring.capacity",
    "pipeline.stages.0.id",
    "pipeline.stages.1.op",
    "pipeline.stages.0.delta",
    "pipeline.stages.0.depends_on.0",
    "pipeline.on_full",
    "pipeline.lanes.0.kind",
    "pipeline.lanes.0.fanout",
    "pipeline.roles.0.kind",
    "pipeline.roles.0.route",
    "pipeline.roles.0.inputs.0",
    "pipeline.endpoints.0.lane",
    "pipeline.stages.00.id",
    "pipeline",
    "",
]
_VALUES = [
    "SingleRing",
    "LaneGraph",
    "0",
    "1",
    "07",
    "add_u8",
    "resolver",
    "journal",
    "fanout",
    "router",
    "bytes:0:4",
    "bytes:x",
    "-1",
    "99999999999999999999999",
    "",
    "=",
    "\x00",
    "\r",
    "é",
    "\udcff",
]


@st.composite
def _kv_like(draw: st.DrawFn) -> bytes:
    lines = draw(
        st.lists(
            st.tuples(st.sampled_from(_KEYS), st.sampled_from(_VALUES) | st.text(max_size=6)), max_size=12
        )
    )
    text = "".join(f"{k}={v}\n" for k, v in lines)
    return text.encode("utf-8", errors="surrogateescape")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | _kv_like())
def test_random_bytes_raise_only_spec_errors(data: bytes) -> None:
    try:
        spec = decode_kv(data)
    except SpecError:
        return
    # Whatever decodes must re-encode to a fixed point.
    assert decode_kv(encode_kv(spec)) == spec


def test_integers_and_indexes_of_thousands_of_digits_are_spec_errors(tmp_path: Path) -> None:
    """An integer of more than 4300 digits was a traceback and exit 1 (Python's int() limit)."""
    path = tmp_path / "spec.kv"
    path.write_text("pipeline.name=x\npipeline.target=SingleRing\n"
                    f"pipeline.ring.capacity={'9' * 5000}\npipeline.stages.0.id=a\n"
                    f"pipeline.stages.{'1' * 5000}.id=b\n")
    proc = subprocess.run([str(BYTEOR), "validate", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 3, proc.stderr
    assert "line 3: integer of 5000 digits is out of range" in proc.stderr
    assert "line 5: index of 5000 digits is out of range" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_fifo_as_spec_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO given as the spec used to block the command forever; anything but a regular file is a
    usage error (exit 2), and nothing is read from it."""
    fifo = tmp_path / "spec.kv"
    os.mkfifo(fifo)
    for verb in ("validate", "describe", "incident-bundle"):
        extra = [f"--out={tmp_path / 'b'}"] if verb == "incident-bundle" else []
        proc = subprocess.run([str(BYTEOR), verb, str(fifo), *extra], capture_output=True, text=True, timeout=30,
                              check=False)
        assert proc.returncode == 2, (verb, proc.stderr)
        assert "not a regular file (a FIFO)" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(UsageError, match="a FIFO"):
        load_spec_file(fifo)
