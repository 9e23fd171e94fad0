"""runtime_config.txt: documented keys, canonical writer, strict reader, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from byteor import UsageError
from byteor.ops import KnobState, RuntimeConfig, decode_runtime_config, encode_runtime_config
from byteor.ops.runtime_config import parse_cpu_list, read_runtime_config, write_runtime_config


def test_round_trip_with_effective_tuning(tmp_path: Path) -> None:
    cfg = RuntimeConfig(
        tuning="isolated-core",
        wait="spin",
        cpus=(2, 3, 5),
        mlockall=True,
        sched_fifo_priority=40,
        env="prod",
        ring_path="/dev/shm/byteor/p-1",
        lane_path="/dev/shm/byteor/p-1",
        journal_dir="/var/tmp/byteor/p-1",
        journal_fsync="segment",
    ).with_effective(
        "stage-a",
        (
            KnobState("cpu_pinning", "one isolated cpu", "cpu 2", "Degraded", "why = so"),
            KnobState("wait", "spin", "spin", "Applied"),
        ),
    )
    path = tmp_path / "runtime_config.txt"
    write_runtime_config(path, cfg)
    assert read_runtime_config(path) == cfg
    text = path.read_text()
    assert text.startswith("config.v=1\nruntime.tuning=isolated-core\n")
    assert "runtime.cpus=2,3,5\n" in text and "tuning.stage-a.cpu_pinning.reason=why = so\n" in text
    assert encode_runtime_config(decode_runtime_config(text)) == text


def test_comments_blank_lines_and_cpu_ranges() -> None:
    cfg = decode_runtime_config("# ops file\n\nruntime.cpus=0,2-4\nruntime.mlockall=false\n")
    assert cfg.cpus == (0, 2, 3, 4) and cfg.mlockall is False and cfg.tuning is None
    assert parse_cpu_list("1-1, 3") == (1, 3) and parse_cpu_list("\n") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "runtime.tuning=fast\n",
            r"line 1: must be one of default\|low-latency\|isolated-core at `runtime.tuning`",
        ),
        ("runtime.wait=spin\nruntime.wait=block\n", "line 2: duplicate key `runtime.wait` .first on line 1"),
        ("runtime.bogus=1\n", "line 1: unknown key `runtime.bogus`"),
        ("no equals sign\n", "line 1: expected key=value"),
        ("runtime.sched_fifo_priority=100\n", "must be 0..99"),
        ("runtime.sched_fifo_priority=07\n", "decimal integer"),
        ("runtime.cpus=3-1\n", "bad CPU range"),
        ("config.v=2\n", "newer than this byteor supports"),
        ("tuning.r.wait.state=Great\n", "Requested|Applied"),
        ("tuning.r.wait.requested=spin\n", "missing `tuning.r.wait.applied`"),
        ("runtime.mlockall=yes\n", "must be true or false at `runtime.mlockall`"),
    ],
)
def test_bad_lines_name_line_and_key(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        decode_runtime_config(text, path="rc.txt")


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_runtime_config(tmp_path / "nope.txt")
