"""More SingleRing runtime cases: ``unordered`` sharding spreads
round robin in both executors, ``run`` shows a live progress line when stderr is a TTY, and Ctrl-C
(SIGINT) drains like SIGTERM."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from byteor import decode_kv
from byteor.runtime import Pipeline
from byteor.spec.model import SingleRingSpecV1
from conftest import BIN

UNORDERED = """
    pipeline.name=rr
    pipeline.target=SingleRing
    pipeline.constraints.shards=3
    pipeline.constraints.ordering=unordered
    pipeline.ring.capacity=16
    pipeline.ring.slot_bytes=8
    pipeline.stages.0.id=inc
    pipeline.stages.0.op=add_u8
    pipeline.stages.0.delta=1
"""


@pytest.mark.parametrize("mode", ["sp", "mp"])
def test_unordered_shards_spread_round_robin(mode: str, ring_dir: Path) -> None:
    spec = decode_kv(textwrap.dedent(UNORDERED).lstrip())
    assert isinstance(spec, SingleRingSpecV1)
    got: dict[int, list[bytes]] = {}
    lock = threading.Lock()

    def on_output(shard: int, data: bytes) -> None:
        with lock:
            got.setdefault(shard, []).append(data)

    n = 900
    # Every message has the same leading bytes: a key hash would send them all to one shard.
    sent = [b"\x07\x07" + i.to_bytes(4, "little") for i in range(n)]
    with Pipeline.open(spec, sp=(mode == "sp"), ring_path=str(ring_dir), wait="block", on_output=on_output) as p:
        p.publish_many(sent[:450])
        for m in sent[450:]:
            p.publish(m)
    assert sorted(got) == [0, 1, 2]
    for shard, outs in got.items():
        # message i went to shard i % 3, and each shard kept its own order
        assert outs == [bytes((b + 1) & 0xFF for b in m) for i, m in enumerate(sent) if i % 3 == shard]


CHAIN = """\
pipeline.name=ttychain
pipeline.target=SingleRing
pipeline.ring.capacity=16
pipeline.ring.slot_bytes=32
pipeline.stages.0.id=a
pipeline.stages.1.id=b
pipeline.stages.1.op=add_u8
pipeline.stages.1.delta=1
pipeline.stages.1.depends_on.0=0
"""


def _read_until(fd: int, needle: bytes, buf: bytearray, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its end
                return needle in buf
            if not chunk:
                return needle in buf
            buf += chunk
    return True


@pytest.mark.parametrize("mode", ["sp", "mp"])
def test_progress_line_on_a_tty_and_ctrl_c_drains(mode: str, ring_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "chain.kv"
    spec.write_text(CHAIN)
    out = tmp_path / "out.txt"
    mode_args = ["--sp"] if mode == "sp" else [f"--ring-path={ring_dir}", "--wait=block"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    env.update(TERM="xterm", COLUMNS="120")
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(BIN / "byteor"), "run", str(spec), *mode_args, f"--output-file={out}",
                             "--output=lines"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=slave,
                            env=env)
    os.close(slave)
    buf = bytearray()
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(b"line%d\n" % i for i in range(100)))
        proc.stdin.flush()
        # the live line counts the 100 messages (stdin stays open, so the run keeps going)
        assert _read_until(master, b"in 100", buf, 60), bytes(buf)
        assert _read_until(master, b"msg/s", buf, 60), bytes(buf)
        if mode == "mp":
            assert _read_until(master, b"ring fill", buf, 60), bytes(buf)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stop reading, drain, exit 0
        _read_until(master, b"(drained)", buf, 60)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        os.close(master)
    assert proc.returncode == 0, bytes(buf)
    assert b"stopped by SIGINT (drained)" in buf
    assert out.read_bytes() == b"".join(bytes((b + 1) & 0xFF for b in b"line%d" % i) + b"\n" for i in range(100))


@pytest.mark.parametrize("wait", ["spin", "yield", "backoff", "block"])
def test_every_wait_strategy_delivers_everything_across_processes(wait: str, ring_dir: Path,
                                                                   tmp_path: Path) -> None:
    spec = tmp_path / "chain.kv"
    spec.write_text(CHAIN)
    msgs = [b"w%d" % i for i in range(2000)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    r = subprocess.run([str(BIN / "byteor"), "run", str(spec), f"--ring-path={ring_dir}", f"--wait={wait}",
                        "--output=lines"], input=b"".join(m + b"\n" for m in msgs), capture_output=True,
                       env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(bytes((b + 1) & 0xFF for b in m) + b"\n" for m in msgs)
    assert b"executor mp" in r.stderr
