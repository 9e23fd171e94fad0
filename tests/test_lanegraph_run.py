"""LaneGraph runners: every lane kind and role, on_full each way, in one process and in many."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor import PipelineFailed, SpecError, UnsupportedSpecError, UsageError
from byteor.lanes.journal import JournalReader
from byteor.runtime.lanegraph import lane_snapshot, lanegraph_unsupported_reasons, run_lanegraph
from byteor.runtime.lanegraph.state import STATE_FILE
from byteor.runtime.sharding import shard_of
from byteor.spec.model import LaneGraphSpecV1
from lanegraph_helpers import lanegraph, run

RUNNERS = ["sp", "mp"]


@pytest.fixture(params=RUNNERS)
def runner(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def msgs(n: int, width: int = 8) -> list[bytes]:
    return [i.to_bytes(width, "little") for i in range(n)]


def plus(msg: bytes, delta: int) -> bytes:
    return bytes((b + delta) & 0xFF for b in msg)


def test_events_chain_with_stages(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "chain",
        [{"name": "a", "kind": "events", "capacity": 64}, {"name": "b", "kind": "events", "capacity": 64},
         {"name": "c", "kind": "events", "capacity": 64}],
        [("in", "ingress", "a"), ("out", "egress", "c")],
        [{"name": "s1", "kind": "stage", "inputs": ["a"], "outputs": ["b"], "op": "add_u8", "delta": 3},
         {"name": "s2", "kind": "stage", "inputs": ["b"], "outputs": ["c"], "op": "identity"}],
    )
    data = msgs(3000)
    got, result = run(spec, runner, data, tmp_path)
    assert got == {"out": [plus(m, 3) for m in data]}
    assert result.messages_in == result.messages_out == 3000
    roles = {r["name"]: r for r in result.state["roles"]}
    assert roles["s1"]["messages_in"] == roles["s1"]["messages_out"] == 3000


def test_fanout_delivers_every_message_to_every_subscriber(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "fan",
        [{"name": "a", "kind": "events", "capacity": 32},
         {"name": "f", "kind": "fanout", "capacity": 16, "fanout": 4},
         {"name": "x", "kind": "events", "capacity": 32}],
        [("in", "ingress", "a"), ("o1", "egress", "f"), ("o2", "egress", "f"), ("o3", "egress", "f"),
         ("o4", "egress", "x")],
        [{"name": "b", "kind": "bridge", "inputs": ["a"], "outputs": ["f"]},
         {"name": "s", "kind": "stage", "inputs": ["f"], "outputs": ["x"], "op": "add_u8", "delta": 1}],
    )
    data = msgs(2000)
    got, _ = run(spec, runner, data, tmp_path)
    assert got["o1"] == got["o2"] == got["o3"] == data
    assert got["o4"] == [plus(m, 1) for m in data]


def test_router_and_merge(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "rm",
        [{"name": "a", "kind": "events"}, {"name": "l0", "kind": "events", "capacity": 16},
         {"name": "l1", "kind": "events", "capacity": 16}, {"name": "l2", "kind": "events", "capacity": 16},
         {"name": "m", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "m")],
        [{"name": "r", "kind": "router", "inputs": ["a"], "outputs": ["l0", "l1", "l2"],
          "route": "round_robin"},
         {"name": "mg", "kind": "merge", "inputs": ["l0", "l1", "l2"], "outputs": ["m"]}],
    )
    data = msgs(3000)
    got, result = run(spec, runner, data, tmp_path)
    assert sorted(got["out"], key=lambda m: int.from_bytes(m, "little")) == data
    lanes = {lane["name"]: lane for lane in result.state["lanes"]}
    assert [lanes[f"l{i}"]["write_pos"] for i in range(3)] == [1000, 1000, 1000]
    # each branch keeps its order through the merge
    for i in range(3):
        branch = [m for m in got["out"] if int.from_bytes(m, "little") % 3 == i]
        assert branch == [m for m in data if int.from_bytes(m, "little") % 3 == i]


def test_router_stable_hash_keeps_keys_together(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "rh",
        [{"name": "a", "kind": "events"}, {"name": "l0", "kind": "events"}, {"name": "l1", "kind": "events"}],
        [("in", "ingress", "a"), ("o0", "egress", "l0"), ("o1", "egress", "l1")],
        [{"name": "r", "kind": "router", "inputs": ["a"], "outputs": ["l0", "l1"], "route": "bytes:0:2"}],
    )
    data = [bytes([k, 0]) + i.to_bytes(4, "little") for i in range(500) for k in range(8)]
    got, _ = run(spec, runner, data, tmp_path)
    keys0 = {m[:2] for m in got.get("o0", [])}
    keys1 = {m[:2] for m in got.get("o1", [])}
    assert not keys0 & keys1 and len(keys0 | keys1) == 8
    # the same hash as SingleRing sharding, so a key lands on the same branch as on the same shard
    assert all(shard_of(k, 0, 2, 2) == 0 for k in keys0) and all(shard_of(k, 0, 2, 2) == 1 for k in keys1)
    for ep in ("o0", "o1"):  # per-key order kept
        for key in {m[:2] for m in got.get(ep, [])}:
            assert [m for m in got[ep] if m[:2] == key] == [m for m in data if m[:2] == key]


def test_mpsc_keeps_each_producers_order(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "mpsc",
        [{"name": "a", "kind": "events"}, {"name": "l0", "kind": "events", "capacity": 8},
         {"name": "l1", "kind": "events", "capacity": 8}, {"name": "m", "kind": "mpsc", "capacity": 16}],
        [("in", "ingress", "a"), ("out", "egress", "m")],
        [{"name": "r", "kind": "router", "inputs": ["a"], "outputs": ["l0", "l1"], "route": "bytes:0:1"},
         {"name": "p0", "kind": "stage", "inputs": ["l0"], "outputs": ["m"], "op": "identity"},
         {"name": "p1", "kind": "bridge", "inputs": ["l1"], "outputs": ["m"]}],
    )
    data = [bytes([k]) + i.to_bytes(4, "little") for i in range(1500) for k in (1, 2)]
    got, _ = run(spec, runner, data, tmp_path)
    assert sorted(got["out"]) == sorted(data)
    for k in (1, 2):
        assert [m for m in got["out"] if m[0] == k] == [m for m in data if m[0] == k]


def test_journal_lane_records_and_feeds_readers(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "jr",
        [{"name": "a", "kind": "events"}, {"name": "j", "kind": "journal", "segment_bytes": 4096},
         {"name": "x", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "j"), ("out2", "egress", "x")],
        [{"name": "w", "kind": "stage", "inputs": ["a"], "outputs": ["j"], "op": "add_u8", "delta": 2},
         {"name": "rd", "kind": "bridge", "inputs": ["j"], "outputs": ["x"]}],
    )
    data = msgs(700)
    got, result = run(spec, runner, data, tmp_path)
    expected = [plus(m, 2) for m in data]
    assert got["out"] == got["out2"] == expected
    journal = JournalReader(tmp_path / "journal" / "j")
    assert list(journal.records()) == expected
    assert len(journal.segments()) > 1  # rolled over
    # a second run appends after the first; its readers start at the end of the first run
    got2, _ = run(spec, runner, data[:10], tmp_path)
    assert got2["out"] == expected[:10]
    assert journal.positions() == (0, 710)
    lanes = {lane["name"]: lane for lane in result.state["lanes"]}
    assert lanes["j"]["kind"] == "journal" and lanes["j"]["write_pos"] == 700


def _pressure(on_full: str, per_lane: bool = False) -> LaneGraphSpecV1:
    lanes: list[dict[str, object]] = [
        {"name": "a", "kind": "events", "capacity": 64},
        {"name": "b", "kind": "events", "capacity": 2},
    ]
    if per_lane:
        lanes[1]["on_full"] = on_full
    return lanegraph(
        "press", lanes, [("in", "ingress", "a"), ("out", "egress", "b")],
        [{"name": "s", "kind": "stage", "inputs": ["a"], "outputs": ["b"], "op": "identity"}],
        on_full=None if per_lane else on_full,
    )


def test_on_full_block_loses_nothing(runner: str, tmp_path: Path) -> None:
    data = msgs(2000)
    got, result = run(_pressure("block"), runner, data, tmp_path)
    assert got["out"] == data and result.drops["b"] == 0


@pytest.mark.parametrize("per_lane", [False, True])
def test_on_full_drop_newest_counts_drops(runner: str, tmp_path: Path, per_lane: bool) -> None:
    data = msgs(2000)
    got, result = run(_pressure("drop_newest", per_lane), runner, data, tmp_path)
    out = got.get("out", [])
    # with the graph-wide policy the ingress lane may drop too (MP: the producer outruns the stage)
    assert len(out) + sum(result.drops.values()) == len(data)
    if per_lane:
        assert result.drops["a"] == 0
    assert out == sorted(out, key=lambda m: int.from_bytes(m, "little"))  # survivors keep their order
    assert set(out) <= set(data)
    lanes = {lane["name"]: lane for lane in result.state["lanes"]}
    assert lanes["b"]["drops"] == result.drops["b"] and lanes["b"]["on_full"] == "drop_newest"
    if runner == "sp":
        assert result.drops["b"] > 0  # deterministic: the stage moves 64 into a lane of 2 per round


def test_on_full_fail_names_the_lane(runner: str, tmp_path: Path) -> None:
    if runner == "sp":
        with pytest.raises(PipelineFailed, match="lane 'b' is full"):
            run(_pressure("fail"), runner, msgs(2000), tmp_path)
    else:  # in MP the egress may keep up; a lane nobody drains fills for sure
        spec = lanegraph(
            "failmp",
            [{"name": "a", "kind": "events", "capacity": 64}, {"name": "b", "kind": "fanout", "capacity": 2,
                                                               "fanout": 2, "on_full": "fail"},
             {"name": "c", "kind": "events", "capacity": 2}],
            [("in", "ingress", "a"), ("out", "egress", "b"), ("out2", "egress", "c")],
            [{"name": "s", "kind": "stage", "inputs": ["a"], "outputs": ["b"], "op": "identity"},
             {"name": "slow", "kind": "stage", "inputs": ["b"], "outputs": ["c"],
              "op": "resolver", "resolver_key": "py:lanegraph_helpers:hang"}],
        )
        with pytest.raises(PipelineFailed, match="lane 'b' is full"):
            run(spec, runner, msgs(2000), tmp_path)


def test_unsupported_shapes_are_refused(tmp_path: Path) -> None:
    spec = lanegraph(
        "twice",
        [{"name": "a", "kind": "events"}, {"name": "f", "kind": "fanout", "fanout": 2},
         {"name": "b", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "b")],
        [{"name": "w", "kind": "bridge", "inputs": ["a"], "outputs": ["f"]},
         {"name": "m", "kind": "merge", "inputs": ["f", "f"], "outputs": ["b"]}],
    )
    reasons = lanegraph_unsupported_reasons(spec)
    assert reasons and "reads the same lane twice" in reasons[0]
    with pytest.raises(UnsupportedSpecError, match="reads the same lane twice"):
        run_lanegraph(spec, sp=True, inputs=[], outputs=lambda e, m: None, journal_dir=str(tmp_path))


def test_bad_resolver_key_names_the_role(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "badkey",
        [{"name": "a", "kind": "events"}, {"name": "b", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "b")],
        [{"name": "s", "kind": "stage", "inputs": ["a"], "outputs": ["b"], "op": "resolver",
          "resolver_key": "py:no_such_module_xyz:fn"}],
    )
    with pytest.raises(SpecError, match=r"pipeline\.roles\.0\.resolver_key"):
        run(spec, runner, msgs(3), tmp_path)


def test_oversized_message_fails_naming_the_lane(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "big",
        [{"name": "a", "kind": "events", "slot_bytes": 16}, {"name": "b", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "b")],
        [{"name": "s", "kind": "bridge", "inputs": ["a"], "outputs": ["b"]}],
    )
    with pytest.raises(PipelineFailed, match="exceeds lane 'a' slot_bytes=16"):
        run(spec, runner, [b"x" * 17], tmp_path)


def test_mp_role_killed_midstream_is_restarted(tmp_path: Path) -> None:
    """SIGKILL a role while it moves messages: it is restarted, resumes from its cell, and every
    message arrives exactly once, in order."""
    spec = lanegraph(
        "kill",
        [{"name": "a", "kind": "events", "capacity": 64}, {"name": "b", "kind": "events", "capacity": 64},
         {"name": "c", "kind": "events", "capacity": 64}],
        [("in", "ingress", "a"), ("out", "egress", "c")],
        [{"name": "s1", "kind": "stage", "inputs": ["a"], "outputs": ["b"], "op": "add_u8", "delta": 1},
         {"name": "s2", "kind": "bridge", "inputs": ["b"], "outputs": ["c"]}],
    )
    data = msgs(20_000)
    lanes = tmp_path / "lanes"
    seen: dict[str, object] = {}

    def source() -> Iterator[bytes]:
        for i, m in enumerate(data):
            if i == 5000:
                deadline = time.monotonic() + 30
                while not (lanes / STATE_FILE).exists():
                    assert time.monotonic() < deadline, "no lane_graph_state.json while running"
                    time.sleep(0.01)
                state = lane_snapshot(str(lanes))
                seen["state"] = state
                role = next(r for r in state["roles"] if r["name"] == "s1")
                assert role["alive"] and role["pid"]
                os.kill(role["pid"], signal.SIGKILL)
            yield m

    got, result = run(spec, "mp", source(), tmp_path)
    assert got["out"] == [plus(m, 1) for m in data]
    roles = {r["name"]: r for r in result.state["roles"]}
    assert roles["s1"]["restarts"] == 1
    running = seen["state"]
    assert isinstance(running, dict) and running["runner"] == "mp"
    assert {lane["name"] for lane in running["lanes"]} == {"a", "b", "c"}
    assert not lanes.exists()  # nothing left behind in the lane path


@pytest.mark.slow
def test_mp_roles_killed_midstream_lose_and_repeat_nothing(tmp_path: Path) -> None:
    """SIGKILL a Python stage, a router, a merge and a bridge role, one after the other, while
    100 000 messages flow: each is restarted and every message arrives exactly once."""
    spec = lanegraph(
        "kill4",
        [{"name": "a", "kind": "events", "capacity": 256}, {"name": "b", "kind": "events", "capacity": 256},
         {"name": "l0", "kind": "events", "capacity": 256}, {"name": "l1", "kind": "events", "capacity": 256},
         {"name": "c", "kind": "events", "capacity": 256}, {"name": "d", "kind": "events", "capacity": 256}],
        [("in", "ingress", "a"), ("out", "egress", "d")],
        [{"name": "s", "kind": "stage", "inputs": ["a"], "outputs": ["b"], "op": "resolver",
          "resolver_key": "py:lanegraph_helpers:shout"},
         {"name": "r", "kind": "router", "inputs": ["b"], "outputs": ["l0", "l1"], "route": "bytes:0:1"},
         {"name": "m", "kind": "merge", "inputs": ["l0", "l1"], "outputs": ["c"]},
         {"name": "br", "kind": "bridge", "inputs": ["c"], "outputs": ["d"]}],
    )
    data = msgs(100_000)
    lanes = tmp_path / "lanes"
    victims = {20_000: "s", 40_000: "r", 60_000: "m", 80_000: "br"}

    def source() -> Iterator[bytes]:
        for i, m in enumerate(data):
            if i in victims:
                deadline = time.monotonic() + 30
                while not (lanes / STATE_FILE).exists():
                    assert time.monotonic() < deadline, "no lane_graph_state.json while running"
                    time.sleep(0.01)
                role = next(r for r in lane_snapshot(str(lanes))["roles"] if r["name"] == victims[i])
                assert role["alive"] and role["pid"]
                os.kill(role["pid"], signal.SIGKILL)
            yield m

    got, result = run(spec, "mp", source(), tmp_path)
    out = got["out"]
    expected = [m + b"!" for m in data]
    assert len(out) == len(expected) and sorted(out) == sorted(expected)  # none lost, none twice
    for key in (0, 1):  # each route keeps the input order through the merge
        routed = [m for m in out if shard_of(m, 0, 1, 2) == key]
        assert routed == [m for m in expected if shard_of(m, 0, 1, 2) == key]
    roles = {r["name"]: r for r in result.state["roles"]}
    assert [roles[n]["restarts"] for n in ("s", "r", "m", "br")] == [1, 1, 1, 1]


def test_mp_mpsc_writers_killed_after_a_claim_drop_only_that_slot(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Both writers of an mpsc lane die right after their 1500th claim of each run (fault
    injection) and are restarted: each death leaves one claimed slot, which the restarted role
    publishes as dropped and counts; every message still arrives exactly once, in each writer's order."""
    spec = lanegraph(
        "holes",
        [{"name": "a", "kind": "events", "capacity": 256}, {"name": "l0", "kind": "events", "capacity": 256},
         {"name": "l1", "kind": "events", "capacity": 256}, {"name": "m", "kind": "mpsc", "capacity": 64}],
        [("in", "ingress", "a"), ("out", "egress", "m")],
        [{"name": "r", "kind": "router", "inputs": ["a"], "outputs": ["l0", "l1"], "route": "bytes:0:1"},
         {"name": "s", "kind": "stage", "inputs": ["l0"], "outputs": ["m"], "op": "add_u8", "delta": 1},
         {"name": "b", "kind": "bridge", "inputs": ["l1"], "outputs": ["m"]}],
    )
    monkeypatch.setenv("BYTEOR_FAULT_ROLE_KILL", "claim:1500")  # read by the roles' native loops
    data = msgs(5000)
    got, result = run(spec, "mp", data, tmp_path)
    via_s = [plus(m, 1) for m in data if shard_of(m, 0, 1, 2) == 0]
    via_b = [m for m in data if shard_of(m, 0, 1, 2) == 1]
    out = got["out"]
    assert sorted(out) == sorted(via_s + via_b)  # none lost, none twice, no empty message
    assert [m for m in out if m in set(via_s)] == via_s and [m for m in out if m in set(via_b)] == via_b
    roles = {r["name"]: r for r in result.state["roles"]}
    deaths = roles["s"]["restarts"] + roles["b"]["restarts"]
    assert roles["s"]["restarts"] >= 1 and roles["b"]["restarts"] >= 1 and roles["r"]["restarts"] == 0
    lanes = {lane["name"]: lane for lane in result.state["lanes"]}
    assert lanes["m"]["repaired"] == deaths and lanes["a"]["repaired"] == 0


def test_sp_is_deterministic(tmp_path: Path) -> None:
    """Same input, same output, same drops, same counters: the SP schedule has no timing in it."""
    spec = lanegraph(
        "det",
        [{"name": "a", "kind": "events", "capacity": 16}, {"name": "l0", "kind": "events", "capacity": 4},
         {"name": "l1", "kind": "events", "capacity": 2}, {"name": "m", "kind": "mpsc", "capacity": 4}],
        [("in", "ingress", "a"), ("out", "egress", "m")],
        [{"name": "r", "kind": "router", "inputs": ["a"], "outputs": ["l0", "l1"], "route": "bytes:0:1"},
         {"name": "s", "kind": "stage", "inputs": ["l0"], "outputs": ["m"], "op": "add_u8", "delta": 7},
         {"name": "b", "kind": "bridge", "inputs": ["l1"], "outputs": ["m"]}],
        on_full="drop_newest",
    )
    data = [bytes([i % 5]) + i.to_bytes(3, "little") for i in range(3000)]
    runs = [run(spec, "sp", data, tmp_path / str(k)) for k in range(2)]
    (got1, res1), (got2, res2) = runs
    assert got1 == got2 and res1.drops == res2.drops and sum(res1.drops.values()) > 0
    strip = [{k: v for k, v in r.state.items() if k not in ("taken_unix_ms", "journal_dir")} for r in (res1, res2)]
    assert strip[0] == strip[1]


def test_python_stages_drop_and_resize(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "pystage",
        [{"name": "a", "kind": "events"}, {"name": "b", "kind": "events"}, {"name": "c", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "c")],
        [{"name": "filter", "kind": "stage", "inputs": ["a"], "outputs": ["b"], "op": "resolver",
          "resolver_key": "py:lanegraph_helpers:drop_odd"},
         {"name": "grow", "kind": "stage", "inputs": ["b"], "outputs": ["c"], "op": "resolver",
          "resolver_key": "py:lanegraph_helpers:shout"}],
    )
    data = [bytes([i % 256, 7]) for i in range(1000)]
    got, result = run(spec, runner, data, tmp_path)
    assert got["out"] == [m + b"!" for m in data if m[0] % 2 == 0]
    roles = {r["name"]: r for r in result.state["roles"]}
    assert roles["filter"]["messages_in"] == 1000 and roles["filter"]["messages_out"] == 500


def test_mp_streams_while_the_input_pauses(tmp_path: Path) -> None:
    """An input that waits for each answer (a conversation over a pipe) still gets it: the
    multi-process runner serves egress while the input has nothing to give."""
    spec = lanegraph(
        "stream",
        [{"name": "a", "kind": "events"}, {"name": "b", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "b")],
        [{"name": "s", "kind": "stage", "inputs": ["a"], "outputs": ["b"], "op": "add_u8", "delta": 1}],
    )
    answers: list[bytes] = []

    def conversation() -> Iterator[bytes]:
        for i in range(20):
            yield bytes([i])
            deadline = time.monotonic() + 30
            while len(answers) <= i:
                assert time.monotonic() < deadline, f"no answer to message {i}"
                time.sleep(0.001)

    result = run_lanegraph(spec, sp=False, inputs=conversation(), outputs=lambda _e, m: answers.append(m),
                           lane_path=str(tmp_path / "lanes"), journal_dir=str(tmp_path / "j"), wait="block")
    assert answers == [bytes([i + 1]) for i in range(20)] and result.messages_out == 20


def test_input_errors_reach_the_caller(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "inerr",
        [{"name": "a", "kind": "events"}, {"name": "b", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "b")],
        [{"name": "s", "kind": "bridge", "inputs": ["a"], "outputs": ["b"]}],
    )

    def bad_input() -> Iterator[bytes]:
        yield b"ok"
        raise UsageError("line 2: bad hex 'zz'")

    with pytest.raises(UsageError, match="line 2: bad hex"):
        run(spec, runner, bad_input(), tmp_path)
    assert not (tmp_path / "lanes").exists()


def test_ingress_into_a_journal_lane(runner: str, tmp_path: Path) -> None:
    spec = lanegraph(
        "jin",
        [{"name": "j", "kind": "journal", "segment_bytes": 4096, "slot_bytes": 64},
         {"name": "x", "kind": "fanout", "fanout": 2}],
        [("in", "ingress", "j"), ("o1", "egress", "x"), ("o2", "egress", "x")],
        [{"name": "b", "kind": "bridge", "inputs": ["j"], "outputs": ["x"]}],
    )
    data = msgs(500)
    got, result = run(spec, runner, data, tmp_path)
    assert got["o1"] == got["o2"] == data
    assert list(JournalReader(tmp_path / "journal" / "j").records()) == data
    lanes = {lane["name"]: lane for lane in result.state["lanes"]}
    assert lanes["j"]["write_pos"] == 500 and lanes["j"]["read_pos"] == [500]


def test_journal_egress_delivers_long_backlogs(runner: str, tmp_path: Path) -> None:
    """More records than one poll returns (4096) reach a journal egress, none lost at the end."""
    spec = lanegraph(
        "jbig",
        [{"name": "a", "kind": "events"}, {"name": "j", "kind": "journal", "slot_bytes": 16}],
        [("in", "ingress", "a"), ("out", "egress", "j")],
        [{"name": "w", "kind": "bridge", "inputs": ["a"], "outputs": ["j"]}],
    )
    data = msgs(12_000)
    got, _ = run(spec, runner, data, tmp_path)
    assert got["out"] == data


def test_mp_hung_role_is_killed_and_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from byteor.runtime.lanegraph import mp as mp_runner

    monkeypatch.setattr(mp_runner, "HEARTBEAT_TIMEOUT_S", 1.0)
    monkeypatch.setenv("LG_HANG_MARKER", str(tmp_path / "hung-once"))
    spec = lanegraph(
        "hung",
        [{"name": "a", "kind": "events", "capacity": 16}, {"name": "b", "kind": "events"}],
        [("in", "ingress", "a"), ("out", "egress", "b")],
        [{"name": "stuck", "kind": "stage", "inputs": ["a"], "outputs": ["b"], "op": "resolver",
          "resolver_key": "py:lanegraph_helpers:hang_once"}],
    )
    data = msgs(200)
    got, result = run(spec, "mp", data, tmp_path)
    assert got["out"] == data
    assert {r["name"]: r for r in result.state["roles"]}["stuck"]["restarts"] == 1
