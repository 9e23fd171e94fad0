"""Supervisor: hung stages (no heartbeat while work waits) are killed and restarted; stale rings reclaimed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from byteor import ShmError, decode_kv
from byteor.runtime import Pipeline
from byteor.spec.model import SingleRingSpecV1

SPEC = """\
pipeline.name=sup
pipeline.target=SingleRing
pipeline.ring.capacity=16
pipeline.ring.slot_bytes=8
pipeline.stages.0.id=a
pipeline.stages.0.op=add_u8
pipeline.stages.0.delta=2
pipeline.stages.1.id=b
pipeline.stages.1.depends_on.0=0
"""


@pytest.fixture
def spec() -> SingleRingSpecV1:
    s = decode_kv(SPEC)
    assert isinstance(s, SingleRingSpecV1)
    return s


def test_hung_stage_is_killed_and_restarted(spec: SingleRingSpecV1, ring_dir: Path) -> None:
    outs: list[bytes] = []
    p = Pipeline.open(spec, ring_path=str(ring_dir), wait="block", heartbeat_timeout=0.5,
                      on_output=lambda _s, d: outs.append(d))
    try:
        pid = p.stage_pids()[0]
        os.kill(pid, signal.SIGSTOP)  # alive, but it will never beat again
        sent = [i.to_bytes(2, "little") for i in range(2000)]
        producer = threading.Thread(target=lambda: [p.publish(m) for m in sent])
        producer.start()
        producer.join(120)
        assert not producer.is_alive()
        p.close()
    except BaseException:
        p.abort()
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert p.stats()["restarts"] == {"stage 0 'a'": 1}
    assert outs == [bytes((b + 2) & 0xFF for b in m) for m in sent]


def test_idle_stage_is_not_restarted(spec: SingleRingSpecV1, ring_dir: Path) -> None:
    """A stage blocked on the futex with nothing to do does not beat, and must not count as hung."""
    with Pipeline.open(spec, ring_path=str(ring_dir), wait="block", heartbeat_timeout=0.2) as p:
        p.publish(b"\x01")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
        p.publish(b"\x02")
    assert list(p.outputs()) == [b"\x03", b"\x04"]
    assert p.stats()["restarts"] == {}


def test_stale_ring_of_a_dead_run_is_reclaimed(spec: SingleRingSpecV1, ring_dir: Path) -> None:
    """A run whose supervisor was SIGKILLed leaves its ring file; the next run of the spec reclaims it."""
    path = ring_dir / "shard-0.ring"
    code = textwrap.dedent(f"""
        from byteor.shm import create_ring
        r = create_ring({str(path)!r}, 16, 8, [0, 1, 3], "sha256:" + "00" * 32)
        r.register_participant(1, __import__("os").getpid())
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert path.exists()
    with Pipeline.open(spec, ring_path=str(ring_dir), wait="block") as p:
        p.publish(b"\x00")
    assert list(p.outputs()) == [b"\x02"]


def test_ring_in_use_is_not_taken_over(spec: SingleRingSpecV1, ring_dir: Path) -> None:
    with Pipeline.open(spec, ring_path=str(ring_dir), wait="block") as first:
        with pytest.raises(ShmError, match="in use by a running pipeline"):
            Pipeline.open(spec, ring_path=str(ring_dir), wait="block")
        first.publish(b"\x05")
    assert list(first.outputs()) == [b"\x07"]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_pipeline_with_block_wait_burns_almost_no_cpu(ring_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    mod = f"idle_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text("def same(slot, n):\n    return n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    spec = decode_kv(SPEC + f"pipeline.stages.2.id=py\npipeline.stages.2.op=resolver\n"
                            f"pipeline.stages.2.resolver_key=py:{mod}:same\npipeline.stages.2.depends_on.0=1\n")
    with Pipeline.open(spec, ring_path=str(ring_dir), wait="block") as p:
        p.publish(b"\x00")
        pids = p.stage_pids()
        assert len(pids) == 3
        deadline = time.monotonic() + 30
        while len(list(p.outputs())) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = sum(_cpu_seconds(pid) for pid in pids)
        time.sleep(1.0)
        used = sum(_cpu_seconds(pid) for pid in pids) - before
    assert used < 0.2, f"idle stage processes used {used:.2f} CPU-seconds in one second"
