"""Journal integrity: damage is reported with its file and offset, never looped on, skipped,
renumbered or returned truncated; segments are allocated up front (a full disk is an error, not a
SIGBUS); every segment records the spec hash of the run that wrote it, and replay checks it."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor import ArtifactError, UnsafePathError
from byteor.lanes.journal import (
    HEADER_BYTES,
    RECORD_HEADER_BYTES,
    JournalCorrupt,
    JournalReader,
    JournalWriter,
    list_segments,
    segment_name,
)
from byteor.spec.kv import decode_kv, spec_hash

BIN = Path(sys.executable).parent
HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64
IMPLS = ["native", "python"]


def _fill(d: Path, impl: str, n: int = 200, **kw: object) -> list[bytes]:
    """``n`` records of 20..119 bytes in 4 KiB segments (about 45 per segment)."""
    msgs = [bytes([i % 251]) * (20 + i % 100) for i in range(n)]
    kw.setdefault("spec_hash", HASH_A)
    with JournalWriter(d, segment_bytes=4096, slot_bytes=200, impl=impl, **kw) as w:  # type: ignore[arg-type]
        for m in msgs:
            w.append(m)
    return msgs


def _offsets(msgs: list[bytes], first: int, count: int) -> list[int]:
    """Byte offsets of records ``first .. first+count-1`` inside their segment (which starts at ``first``)."""
    out, at = [], HEADER_BYTES
    for m in msgs[first:first + count]:
        out.append(at)
        at += RECORD_HEADER_BYTES + (len(m) + 7) // 8 * 8
    return out


def _patch(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def _set_header_index(path: Path, index: int) -> None:
    """Rewrite a segment header's index and recompute its checksum: damage the CRC cannot see."""
    raw = bytearray(path.read_bytes())
    struct.pack_into("<Q", raw, 16, index)
    struct.pack_into("<I", raw, 88, zlib.crc32(bytes(raw[:88])))
    path.write_bytes(bytes(raw))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", IMPLS)
def test_a_segment_header_naming_an_earlier_index_is_corruption_not_a_loop(tmp_path: Path, impl: str) -> None:
    """A header (valid checksum) naming an earlier segment made the reader loop forever."""
    _fill(tmp_path, impl)
    assert len(list_segments(tmp_path)) >= 4
    seg2 = tmp_path / segment_name(2)
    _set_header_index(seg2, 0)
    with pytest.raises(JournalCorrupt) as info:
        list(JournalReader(tmp_path).records())
    assert info.value.segment == str(seg2) and info.value.offset == 16
    assert "names segment 0, but the file is segment 2" in str(info.value)
    with pytest.raises(JournalCorrupt, match="names segment 0"):
        JournalReader(tmp_path).verify()


@pytest.mark.timeout(120)
def test_replay_of_a_bundle_whose_journal_loops_fails_instead_of_hanging(tmp_path: Path) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text("pipeline.name=loop\npipeline.target=SingleRing\npipeline.stages.0.id=a\n")
    jdir = tmp_path / "j"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64,
                       spec_hash=spec_hash(decode_kv(spec.read_bytes()))) as w:
        for i in range(600):
            w.append(b"r%03d" % i)
    bundle = tmp_path / "bundle"
    made = subprocess.run([str(BIN / "byteor"), "incident-bundle", str(spec), f"--out={bundle}",
                           f"--journal=events={jdir}"], capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    seg = bundle / "journals" / "events" / segment_name(2)
    _set_header_index(seg, 1)
    # the bundle manifest pins every file's hash: replay would refuse the bundle for that alone
    manifest = bundle / "bundle_manifest.json"
    manifest.unlink()
    res = subprocess.run([str(BIN / "byteor"), "replay", f"--bundle={bundle}", "--journal-lane=events",
                          "--last-n=600", f"--out={tmp_path / 'audit.json'}"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1, res.stderr
    assert f"{seg}: corrupt journal at byte 16" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("impl", IMPLS)
def test_a_cleared_committed_flag_in_a_sealed_segment_is_reported_not_skipped(tmp_path: Path, impl: str) -> None:
    msgs = _fill(tmp_path, impl)
    headers = JournalReader(tmp_path).segments()
    per_seg = headers[1].first_record
    k = per_seg // 2
    at = _offsets(msgs, 0, per_seg)[k]
    _patch(tmp_path / segment_name(0), at + 4, struct.pack("<I", 0))
    sub = JournalReader(tmp_path).subscribe()
    assert sub.poll(10_000) == msgs[:k]  # what precedes the damage, then the error
    with pytest.raises(JournalCorrupt) as info:
        sub.poll()
    sub.close()
    assert info.value.offset == at and info.value.segment == str(tmp_path / segment_name(0))
    assert f"record {k} is not committed" in str(info.value)
    # positions are never renumbered: reading from the next segment gives the same indexes as before
    assert list(JournalReader(tmp_path).records(per_seg)) == msgs[per_seg:]
    with pytest.raises(JournalCorrupt, match=f"byte {at}"):
        JournalReader(tmp_path).verify()


@pytest.mark.parametrize("impl", IMPLS)
def test_a_cleared_flag_in_the_open_segment_is_not_taken_for_a_torn_tail(tmp_path: Path, impl: str) -> None:
    msgs = _fill(tmp_path, impl, n=10)
    at = _offsets(msgs, 0, 10)[3]
    _patch(tmp_path / segment_name(0), at + 4, struct.pack("<I", 0))
    sub = JournalReader(tmp_path).subscribe()
    assert sub.poll() == msgs[:3]
    with pytest.raises(JournalCorrupt, match="record 3 is not committed, but the record after it"):
        sub.poll()
    sub.close()
    with pytest.raises(JournalCorrupt, match="data after the last readable record"):
        JournalReader(tmp_path).verify()
    with pytest.raises(JournalCorrupt, match="later records follow it"):
        JournalWriter(tmp_path, segment_bytes=4096, slot_bytes=200, impl=impl)  # never zeroes records 4..9


@pytest.mark.parametrize("impl", IMPLS)
def test_a_flipped_length_or_payload_byte_fails_the_record_checksum(tmp_path: Path, impl: str) -> None:
    msgs = _fill(tmp_path, impl, n=5)
    first = HEADER_BYTES
    path = tmp_path / segment_name(0)
    original = path.read_bytes()
    _patch(path, first, struct.pack("<I", 8))  # 20 bytes recorded, 8 claimed: used to return 8 bytes
    with pytest.raises(JournalCorrupt, match=f"byte {first}: record checksum mismatch"):
        list(JournalReader(tmp_path).records())
    path.write_bytes(original)
    _patch(path, first + RECORD_HEADER_BYTES + 3, b"\xee")
    with pytest.raises(JournalCorrupt, match="record checksum mismatch"):
        list(JournalReader(tmp_path).records())
    with pytest.raises(JournalCorrupt, match="record checksum mismatch"):
        JournalReader(tmp_path).verify()
    path.write_bytes(original)
    assert list(JournalReader(tmp_path).records()) == msgs


@pytest.mark.parametrize("impl", IMPLS)
def test_verify_raises_on_every_kind_of_damage_and_counts_an_intact_journal(tmp_path: Path, impl: str) -> None:
    msgs = _fill(tmp_path / "ok", impl)
    assert JournalReader(tmp_path / "ok").verify() == len(msgs)
    damaged = tmp_path / "gap"
    shutil.copytree(tmp_path / "ok", damaged)
    (damaged / segment_name(1)).unlink()
    with pytest.raises(JournalCorrupt, match="segment 1 is missing before segment 2"):
        JournalReader(damaged).verify()
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "ok", moved)
    raw = bytearray((moved / segment_name(1)).read_bytes())
    struct.pack_into("<Q", raw, 32, struct.unpack_from("<Q", raw, 32)[0] + 1)
    struct.pack_into("<I", raw, 88, zlib.crc32(bytes(raw[:88])))
    (moved / segment_name(1)).write_bytes(bytes(raw))
    with pytest.raises(JournalCorrupt, match="byte 32: first record is"):
        JournalReader(moved).verify()
    with pytest.raises(JournalCorrupt, match="are missing"):
        list(JournalReader(moved).records())
    sealed = tmp_path / "sealed"
    shutil.copytree(tmp_path / "ok", sealed)
    raw = bytearray((sealed / segment_name(0)).read_bytes())
    struct.pack_into("<Q", raw, 96, 3)  # the sealed record count, without its checksum
    (sealed / segment_name(0)).write_bytes(bytes(raw))
    with pytest.raises(JournalCorrupt, match="seal checksum mismatch"):
        JournalReader(sealed).verify()


FILL_DISK = textwrap.dedent(
    """
    import sys
    from byteor import PipelineFailed
    from byteor.lanes.journal import JournalReader, JournalWriter
    d, impl = sys.argv[1], sys.argv[2]
    n = 0
    try:
        with JournalWriter(d, segment_bytes=64 * 1024, slot_bytes=1024, impl=impl) as w:
            while True:
                w.append(b"x" * 1000)
                n += 1
    except PipelineFailed as exc:
        print("refused:", exc)
    print("appended", n, "read", sum(1 for _ in JournalReader(d).records()))
    """
)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root only: mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)], check=True, timeout=30)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=30)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_full_disk_is_a_clean_error_not_sigbus(small_fs: Path, impl: str) -> None:
    """Sparse segments made the writer and readers die with SIGBUS when the filesystem filled up."""
    proc = subprocess.run([sys.executable, "-c", FILL_DISK, str(small_fs / "j"), impl], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "no space left for segment seg-" in proc.stdout and "lower segment_bytes" in proc.stdout
    appended = int(proc.stdout.split("appended ")[1].split()[0])
    assert appended > 100 and proc.stdout.strip().endswith(f"read {appended}")
    for _, seg in list_segments(small_fs / "j"):
        st = seg.stat()
        assert st.st_blocks * 512 >= st.st_size  # allocated in full, not sparse
    assert not [p for p in (small_fs / "j").iterdir() if p.name.endswith(".tmp")]


def test_a_lanegraph_run_on_a_full_disk_exits_1_with_one_line(small_fs: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text(
        "pipeline.name=full\npipeline.target=LaneGraph\n"
        "pipeline.lanes.0.name=in\npipeline.lanes.0.kind=journal\npipeline.lanes.0.slot_bytes=1024\n"
        "pipeline.lanes.0.segment_bytes=65536\n"
        "pipeline.endpoints.0.name=src\npipeline.endpoints.0.direction=ingress\npipeline.endpoints.0.lane=in\n"
        "pipeline.endpoints.1.name=dst\npipeline.endpoints.1.direction=egress\npipeline.endpoints.1.lane=in\n"
    )
    data = tmp_path / "in.txt"
    data.write_text(("y" * 1000 + "\n") * 400)
    res = subprocess.run([str(BIN / "byteor"), "run", str(spec), "--sp", f"--input={data}",
                          f"--journal-dir={small_fs}", "--output=ascii"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert "no space left for segment" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("impl", IMPLS)
def test_every_segment_records_its_spec_hash(tmp_path: Path, impl: str) -> None:
    msgs = _fill(tmp_path, impl, n=40, spec_hash=HASH_A)
    headers = JournalReader(tmp_path).segments()
    assert {h.spec_hash for h in headers} == {HASH_A}
    with JournalWriter(tmp_path, segment_bytes=4096, slot_bytes=200, impl=impl, spec_hash=HASH_B) as w:
        assert w.append(b"from B") == 40  # the tail segment of spec A is sealed; B gets its own segment
    headers = JournalReader(tmp_path).segments()
    assert headers[-1].spec_hash == HASH_B and headers[-1].first_record == 40
    assert all(h.spec_hash == HASH_A and h.sealed for h in headers[:-1])
    reader = JournalReader(tmp_path)
    assert list(reader.records()) == [*msgs, b"from B"]
    reader.check_spec_hash(HASH_B, 40)
    with pytest.raises(ArtifactError, match=f"written by spec {HASH_A}, not by {HASH_B}"):
        reader.check_spec_hash(HASH_B, 39)
    with pytest.raises(ArtifactError, match=f"written by spec {HASH_B}, not by {HASH_A}"):
        reader.check_spec_hash(HASH_A, 0)
    raw = (tmp_path / segment_name(0)).read_bytes()
    assert raw[56:88] == bytes.fromhex("a" * 64)


def test_replay_refuses_records_written_by_another_spec_version(tmp_path: Path) -> None:
    spec = tmp_path / "spec.kv"
    spec.write_text("pipeline.name=v\npipeline.target=SingleRing\npipeline.stages.0.id=a\n")
    jdir = tmp_path / "j"
    with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=HASH_B) as w:
        w.append(b"old version")
    bundle = tmp_path / "bundle"
    made = subprocess.run([str(BIN / "byteor"), "incident-bundle", str(spec), f"--out={bundle}",
                           f"--journal=events={jdir}"], capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    res = subprocess.run([str(BIN / "byteor"), "replay", f"--bundle={bundle}", "--journal-lane=events",
                          "--last-n=1", f"--out={tmp_path / 'audit.json'}"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1, res.stderr
    assert f"written by spec {HASH_B}, not by sha256:" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "audit.json").exists()


@pytest.mark.parametrize("impl", IMPLS)
def test_journal_files_are_private_and_no_link_is_followed(tmp_path: Path, impl: str) -> None:
    d = tmp_path / "j"
    _fill(d, impl, n=3)
    assert d.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in d.iterdir()} == {0o600}
    victim = tmp_path / "victim"
    victim.write_text("keep")
    other = tmp_path / "k"
    other.mkdir(mode=0o700)
    (other / "writer.lock").symlink_to(victim)
    with pytest.raises(UnsafePathError, match=r"writer\.lock: is a symlink"):
        JournalWriter(other, segment_bytes=4096, slot_bytes=200, impl=impl)
    assert victim.read_text() == "keep"
    (other / "writer.lock").unlink()
    os.link(victim, other / "writer.lock")
    with pytest.raises(UnsafePathError, match="2 hard links"):
        JournalWriter(other, segment_bytes=4096, slot_bytes=200, impl=impl)


def test_the_native_segment_and_the_python_reader_agree_on_the_format() -> None:
    from byteor import _native
    from byteor.lanes import journal as jmod

    assert (_native.JOURNAL_FORMAT_VERSION, _native.JOURNAL_HEADER_BYTES, _native.JOURNAL_RECORD_HEADER_BYTES) == (
        jmod.VERSION, HEADER_BYTES, RECORD_HEADER_BYTES) == (2, 128, 16)
