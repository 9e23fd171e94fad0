"""byteor.shm: lifecycle with ShmError, stale files, RingSnapshot and its JSON round trip."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor import ArtifactError, ShmError, shm
from byteor import _native as N

HEX = "sha256:" + hashlib.sha256(b"shm-layer").hexdigest()


@pytest.fixture
def ring_dir(tmp_path: Path) -> Iterator[Path]:
    d = Path("/dev/shm") / f"byteor-shmtest-{os.getpid()}-{tmp_path.name}"
    yield d
    if d.exists():
        for p in sorted(d.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        d.rmdir()


def test_create_attach_unlink_with_shm_errors(ring_dir: Path) -> None:
    path = ring_dir / "sub" / "a.ring"
    r = shm.create_ring(path, 8, 32, [0, 1], HEX)
    assert path.exists() and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert r.spec_hash.hex() == HEX.removeprefix("sha256:")
    with pytest.raises(ShmError, match="already exists") as ei:
        shm.create_ring(path, 8, 32, [0], HEX)
    assert str(path) in str(ei.value)
    with pytest.raises(ShmError, match="power of two"):
        shm.create_ring(ring_dir / "b.ring", 6, 32, [0], HEX)
    with pytest.raises(ShmError, match="not sha256"):
        shm.create_ring(ring_dir / "c.ring", 8, 32, [0], "sha256:zz")
    a = shm.attach_ring(path, expect_hash=HEX)
    with pytest.raises(ShmError, match="spec hash mismatch"):
        shm.attach_ring(path, expect_hash=hashlib.sha256(b"x").digest())
    with pytest.raises(ShmError, match=f"{ring_dir}/nope.ring: cannot open"):
        shm.attach_ring(ring_dir / "nope.ring")
    (ring_dir / "junk").write_bytes(b"junk" * 1000)
    with pytest.raises(ShmError, match="foreign"):
        shm.attach_ring(ring_dir / "junk")
    a.close()
    r.close()
    assert shm.unlink(path) is True
    assert shm.unlink(path) is False


def test_stale_files_only_lists_abandoned_rings(ring_dir: Path) -> None:
    live = shm.create_ring(ring_dir / "live.ring", 4, 8, [0], HEX)  # creator (this process) alive
    (ring_dir / "notes.txt").write_text("not a ring")
    # a ring made by a process that has exited, with a registered participant that has exited too
    code = (
        "import sys; from byteor import shm; r = shm.create_ring(sys.argv[1], 4, 8, [0], sys.argv[2]);"
        "import os; r.register_participant(1, os.getpid())"
    )
    dead_path = ring_dir / "nested" / "dead.ring"
    subprocess.run([sys.executable, "-c", code, str(dead_path), HEX], check=True, timeout=60)
    assert shm.stale_files(ring_dir) == [str(dead_path)]
    # a live participant keeps a ring in use even when its creator is gone
    r = shm.attach_ring(dead_path)
    slot = r.register_participant(2, os.getpid())
    assert shm.stale_files(ring_dir) == []
    r.unregister_participant(slot)
    assert shm.stale_files(ring_dir) == [str(dead_path)]
    assert shm.stale_files(ring_dir / "missing") == []
    r.close()
    live.close()


def test_stale_files_judge_rings_of_an_earlier_layout_by_their_header(ring_dir: Path) -> None:
    """A ring left by an older byteor (layout version 1, which this build refuses to attach) is
    listed once its creator and participants are gone, and kept while one of them lives."""
    code = ("import sys; from byteor import shm; r = shm.create_ring(sys.argv[1], 4, 8, [0], sys.argv[2]);"
            "import os; r.register_participant(1, os.getpid()); r.register_participant(2, int(sys.argv[3]))")
    path = ring_dir / "old.ring"
    subprocess.run([sys.executable, "-c", code, str(path), HEX, str(os.getpid())], check=True, timeout=60)
    with open(path, "r+b") as fh:
        fh.seek(8)
        fh.write((1).to_bytes(4, "little"))  # what an older build wrote
    with pytest.raises(ShmError, match=f"layout version 1, this build reads version {N.LAYOUT_VERSION}"):
        shm.attach_ring(path)
    assert shm.stale_files(ring_dir) == []  # participant 2 (this process) is running
    with open(path, "r+b") as fh:
        fh.seek(192 + 32 + 8)  # participant 2's pid: a process that has exited
        fh.write((_exited_pid()).to_bytes(4, "little"))
    assert shm.stale_files(ring_dir) == [str(path)]


def _exited_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True, timeout=60)
    return int(child.stdout)


def test_snapshot_json_round_trip(ring_dir: Path, tmp_path: Path) -> None:
    r = shm.create_ring(ring_dir / "snap.ring", 16, 8, [0, 1, 3], HEX)
    slot = r.register_participant(7, os.getpid())
    r.publish_many([b"a", b"b", b"c", b"d"])
    r.release(0, 3)
    r.release(1, 1)
    snap = shm.take_snapshot(r)
    assert snap.cursor == 3 and snap.fill == 4 and snap.capacity == 16 and snap.slot_bytes == 8
    assert [(s.index, s.gating, s.lag) for s in snap.stages] == [(0, 3, 0), (1, 1, 2)]
    assert snap.egress is not None and (snap.egress.index, snap.egress.gating, snap.egress.lag) == (2, -1, 4)
    assert [(p.role, p.pid, p.alive) for p in snap.participants] == [(7, os.getpid(), True)]
    assert snap.participants[0].heartbeat_age_ms >= 0 and snap.spec_hash == HEX
    dest = tmp_path / "single_ring_snapshot.json"
    shm.write_ring_snapshot(dest, snap)
    obj = json.loads(dest.read_text())
    assert list(obj) == ["snapshot_v", "spec_hash", "path", "capacity", "slot_bytes", "cursor", "stages",
                         "egress", "fill", "participants", "stop", "taken_unix_ms"]
    assert obj["snapshot_v"] == 1
    assert shm.read_ring_snapshot(dest) == snap
    # by path (attaches just to read), every cell a stage
    flat = shm.take_snapshot(ring_dir / "snap.ring", egress=False)
    assert flat.egress is None and len(flat.stages) == 3
    # the whole-directory writer used by incident bundles
    out = tmp_path / "dir_snapshot.json"
    shm.write_ring_snapshot_file(str(ring_dir), str(out))
    assert shm.read_ring_snapshot(out).cursor == 3
    r.unregister_participant(slot)
    r.close()


def test_snapshot_reader_rejects_newer_and_malformed(tmp_path: Path) -> None:
    good = {"snapshot_v": 1, "spec_hash": HEX, "path": "/x", "capacity": 8, "slot_bytes": 8, "cursor": -1,
            "stages": [{"index": 0, "gating": -1, "lag": 0}], "egress": None, "fill": 0,
            "participants": [], "stop": False, "taken_unix_ms": 1}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(good))
    assert shm.read_ring_snapshot(p).stages[0].index == 0
    p.write_text(json.dumps({**good, "snapshot_v": 2}))
    with pytest.raises(ArtifactError, match="newer"):
        shm.read_ring_snapshot(p)
    p.write_text(json.dumps({k: v for k, v in good.items() if k != "cursor"}))
    with pytest.raises(ArtifactError, match="`cursor`"):
        shm.read_ring_snapshot(p)
    p.write_text(json.dumps({**good, "stages": [{"index": "0", "gating": 0, "lag": 0}]}))
    with pytest.raises(ArtifactError, match="`index`"):
        shm.read_ring_snapshot(p)
    with pytest.raises(ShmError, match=r"no \*\.ring files"):
        shm.write_ring_snapshot_file(str(tmp_path), str(tmp_path / "o.json"))


def test_never_uses_multiprocessing_shared_memory() -> None:
    src = Path(shm.__file__).parent
    for f in src.glob("*.py"):
        text = f.read_text()
        assert "import multiprocessing" not in text and "from multiprocessing" not in text, f
    assert N.ABI_VERSION >= 1


def test_pid_alive_counts_a_zombie_as_dead() -> None:
    import os
    import subprocess
    import time

    from byteor.shm import pid_alive

    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    # Not reaped yet: the child stays a zombie until wait(); wait for it to exit.
    while time.monotonic() < deadline:
        with open(f"/proc/{child.pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.01)
    else:
        raise AssertionError("child never became a zombie")
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
    assert pid_alive(os.getpid())
