"""lane_graph_state.json: writer, reader, round trip, version and field checks, text rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from byteor import ArtifactError
from byteor.runtime.lanegraph import lane_snapshot, read_state, render_state
from byteor.runtime.lanegraph.state import STATE_FILE, write_state
from byteor.spec.model import LaneGraphSpecV1
from lanegraph_helpers import lanegraph, run


def _spec() -> LaneGraphSpecV1:
    return lanegraph(
        "st",
        [{"name": "a", "kind": "events", "capacity": 8}, {"name": "f", "kind": "fanout", "fanout": 2},
         {"name": "j", "kind": "journal"}],
        [("in", "ingress", "a"), ("o1", "egress", "f"), ("o2", "egress", "j")],
        [{"name": "b", "kind": "bridge", "inputs": ["a"], "outputs": ["f"]},
         {"name": "w", "kind": "bridge", "inputs": ["f"], "outputs": ["j"]}],
    )


def test_round_trip_through_run(tmp_path: Path) -> None:
    lanes = tmp_path / "lanes"
    _, result = run(_spec(), "sp", [b"m%d" % i for i in range(50)], tmp_path, lane_path=str(lanes))
    state = lane_snapshot(str(lanes))
    assert state == result.state
    assert state["state_v"] == 1 and state["runner"] == "sp"
    by = {lane["name"]: lane for lane in state["lanes"]}
    assert by["f"]["read_pos"] == [50, 50] and by["f"]["fill"] == 0 and by["f"]["kind"] == "fanout"
    assert by["j"]["capacity"] == 0 and by["j"]["path"].endswith("/j")
    copy = tmp_path / "copy.json"
    write_state(copy, state)
    assert read_state(copy) == state
    text = Console(width=200, record=True)
    for table in render_state(state):
        text.print(table)
    out = text.export_text()
    assert "fanout" in out and "journal" in out and "50, 50" in out


def test_newer_major_is_refused(tmp_path: Path) -> None:
    _, result = run(_spec(), "sp", [b"x"], tmp_path)
    newer = dict(result.state, state_v=2)
    (tmp_path / STATE_FILE).write_text(json.dumps(newer))
    with pytest.raises(ArtifactError, match="version 2 is newer"):
        read_state(tmp_path)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda s: s.pop("lanes"), "missing field `lanes`"),
    (lambda s: s["lanes"][0].update(drops="many"), "`drops` must be an integer"),
    (lambda s: s["roles"][0].update(alive=1), "`alive` must be a boolean"),
    (lambda s: s.pop("state_v"), "no `state_v` version field"),
])
def test_bad_fields_are_named(tmp_path: Path, mutate: object, message: str) -> None:
    _, result = run(_spec(), "sp", [b"x"], tmp_path)
    state = json.loads(json.dumps(result.state))
    mutate(state)  # type: ignore[operator]
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ArtifactError, match=message):
        read_state(tmp_path / STATE_FILE)


def test_missing_state_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        lane_snapshot(str(tmp_path))
