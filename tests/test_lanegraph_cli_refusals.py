"""`byteor run` refuses a valid LaneGraph whose shape the runners do not support: exit 3 with the
reason, in both runners, before any lane file exists (never best effort); and a graph with several
ingress endpoints is not fed from one input by guesswork (exit 2 naming them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from byteor import Pipeline, decode_kv
from lanegraph_helpers import lanegraph_kv

SAME_LANE_TWICE = lanegraph_kv(
    "twice",
    [{"name": "a", "kind": "events"}, {"name": "f", "kind": "fanout", "fanout": 2}, {"name": "b", "kind": "events"}],
    [("in", "ingress", "a"), ("out", "egress", "b")],
    [{"name": "w", "kind": "bridge", "inputs": ["a"], "outputs": ["f"]},
     {"name": "m", "kind": "merge", "inputs": ["f", "f"], "outputs": ["b"]}],
)

TWO_INGRESS = lanegraph_kv(
    "two_in",
    [{"name": "a", "kind": "mpsc"}, {"name": "b", "kind": "events"}],
    [("i1", "ingress", "a"), ("i2", "ingress", "a"), ("out", "egress", "b")],
    [{"name": "s", "kind": "bridge", "inputs": ["a"], "outputs": ["b"]}],
)


@pytest.mark.parametrize("sp", [True, False])
def test_unsupported_shape_is_refused_with_exit_3(sp: bool, tmp_path: Path, cli) -> None:
    spec = tmp_path / "twice.kv"
    spec.write_text(SAME_LANE_TWICE)
    assert cli("validate", str(spec)).returncode == 0  # valid: the refusal is the executor's
    lanes = tmp_path / "lanes"
    args = ["run", *(["--sp"] if sp else []), f"--spec={spec}", "--input-hex=00", f"--lane-path={lanes}"]
    res = cli(*args, env={"BYTEOR_JOURNAL_DIR": str(tmp_path / "j")})
    assert res.returncode == 3, res.stderr
    assert "LaneGraph shape not supported" in res.stderr and "reads the same lane twice" in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == "" and not lanes.exists()
    compat = cli("compatibility", str(spec))
    assert compat.returncode == 3 and "can run: no" in compat.stdout
    assert "reads the same lane twice" in compat.stdout


@pytest.mark.parametrize("sp", [True, False])
def test_several_ingress_endpoints_take_input_each(sp: bool, tmp_path: Path, cli) -> None:
    spec = tmp_path / "two.kv"
    spec.write_text(TWO_INGRESS)
    lanes = tmp_path / "lanes"
    res = cli("run", *(["--sp"] if sp else []), f"--spec={spec}", "--input-hex=00", f"--lane-path={lanes}",
              env={"BYTEOR_JOURNAL_DIR": str(tmp_path / "j")})
    assert res.returncode == 2, res.stderr
    assert "2 ingress endpoints (i1, i2)" in res.stderr and "--endpoint" in res.stderr
    assert not lanes.exists()
    with Pipeline.open(decode_kv(TWO_INGRESS), sp=sp, ring_path=str(lanes), wait="block",
                       journal_dir=str(tmp_path / "j")) as p:
        p.publish_many([b"a1", b"a2"], endpoint="i1")
        p.publish_many([b"b1"], endpoint="i2")
    assert sorted(p.outputs()) == [b"a1", b"a2", b"b1"]
    # one process leaves only its final state file where asked; many processes leave nothing
    assert sorted(f.name for f in lanes.iterdir()) == ["lane_graph_state.json"] if sp else not lanes.exists()
