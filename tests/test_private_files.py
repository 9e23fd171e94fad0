"""What byteor writes is private to its owner and never redirected by another user: directories are
created 0700 and refused when someone else owns them or may write them, files are created 0600
without following links, and incident bundles copy regular files only.

The attacker side runs as ``nobody`` through ``runuser`` (root only: skipped otherwise)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor import UnsafePathError
from byteor._fileio import copy_tree_nofollow, ensure_private_dir, make_dirs, write_bytes_atomic
from byteor.lanes.journal import JournalWriter
from byteor.shm import create_ring, private_ring_dir
from byteor.spec.kv import decode_kv, spec_hash

BIN = Path(sys.executable).parent
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                                reason="the attacker side runs as nobody through runuser (root only)")


def as_nobody(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", *argv], check=True, timeout=30)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.fixture
def shm_scratch() -> Iterator[Path]:
    """A directory directly in /dev/shm (sticky, world-writable), removed afterwards."""
    path = Path("/dev/shm") / f"byteor-attack-{uuid.uuid4().hex[:12]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_a_ring_directory_planted_by_another_user_is_refused(shm_scratch: Path, tmp_path: Path) -> None:
    """The probe: another user pre-created the (predictable) ring directory with a symlink named like a
    stage error file; a root run then overwrote the root-owned file the link pointed to."""
    victim = tmp_path / "root-only.conf"
    victim.write_text("root's data\n")
    victim.chmod(0o600)
    ring_dir = shm_scratch / "orders"
    as_nobody("mkdir", "-p", "-m", "0777", str(ring_dir))
    as_nobody("ln", "-s", str(victim), str(ring_dir / "shard-0.stage-1.error"))
    module = tmp_path / "boom_stage.py"
    module.write_text("def boom(slot, length):\n    raise RuntimeError('stage failure')\n")
    spec = tmp_path / "spec.kv"
    spec.write_text("pipeline.name=orders\npipeline.target=SingleRing\npipeline.stages.0.id=a\n"
                    "pipeline.stages.1.id=b\npipeline.stages.1.op=resolver\n"
                    "pipeline.stages.1.resolver_key=py:boom_stage:boom\npipeline.stages.1.depends_on.0=0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    env["PYTHONPATH"] = str(tmp_path)
    res = subprocess.run([str(BIN / "byteor"), "run", str(spec), f"--ring-path={ring_dir}", "--input-ascii=x"],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert res.returncode == 1, res.stderr
    assert f"owned by uid {NOBODY}" in res.stderr and "Traceback" not in res.stderr
    assert victim.read_text() == "root's data\n"
    assert sorted(p.name for p in ring_dir.iterdir()) == ["shard-0.stage-1.error"]  # nothing created there
    # the planted directory directly in /dev/shm (root's sticky directory): refused just the same
    as_nobody("chmod", "0755", str(shm_scratch))
    direct = Path(f"{shm_scratch}-direct")
    try:
        as_nobody("mkdir", "-m", "0777", str(direct))
        as_nobody("ln", "-s", str(victim), str(direct / "shard-0.stage-1.error"))
        res = subprocess.run([str(BIN / "byteor"), "run", str(spec), f"--ring-path={direct}", "--input-ascii=x"],
                             capture_output=True, text=True, timeout=120, env=env, check=False)
        assert res.returncode == 1 and f"{direct}: owned by uid {NOBODY}, not by this user" in res.stderr, res.stderr
        assert victim.read_text() == "root's data\n"
    finally:
        shutil.rmtree(direct, ignore_errors=True)


@needs_root
def test_directories_others_own_or_may_write_are_refused(shm_scratch: Path) -> None:
    as_nobody("mkdir", "-m", "0755", str(shm_scratch))
    with pytest.raises(UnsafePathError, match=f"owned by uid {NOBODY}"):
        private_ring_dir(shm_scratch / "ring")  # an ancestor someone else owns
    with pytest.raises(UnsafePathError, match=f"owned by uid {NOBODY}"):
        create_ring(shm_scratch / "ring" / "shard-0.ring", 8, 16, [0], "sha256:" + "0" * 64)
    mine = Path(f"{shm_scratch}-mine")
    try:
        mine.mkdir(mode=0o777)
        mine.chmod(0o777)
        with pytest.raises(UnsafePathError, match="writable by its group or others"):
            ensure_private_dir(mine)
        mine.rmdir()
        mine.symlink_to("/tmp")
        with pytest.raises(UnsafePathError, match="is a symlink"):
            ensure_private_dir(mine)
        with pytest.raises(UnsafePathError, match="is a symlink"):
            JournalWriter(mine, segment_bytes=4096, slot_bytes=64)
    finally:
        if mine.is_symlink() or mine.is_file():
            mine.unlink()
        elif mine.exists():
            mine.rmdir()


def test_directories_byteor_creates_are_private_and_narrowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BYTEOR_GROUP_READABLE", raising=False)
    made = Path(ensure_private_dir(tmp_path / "a" / "b" / "c"))
    assert [_mode(p) for p in (made.parent.parent, made.parent, made)] == [0o700] * 3
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    ensure_private_dir(loose)
    assert _mode(loose) == 0o700  # ours, but readable by all: narrowed
    shared = tmp_path / "shared-out"
    shared.mkdir()
    shared.chmod(0o755)
    make_dirs(shared / "new")  # where an artifact goes: existing parents are left as they are
    assert _mode(shared) == 0o755 and _mode(shared / "new") == 0o700
    monkeypatch.setenv("BYTEOR_GROUP_READABLE", "1")
    assert _mode(Path(ensure_private_dir(tmp_path / "team"))) == 0o750
    write_bytes_atomic(tmp_path / "team" / "f", b"x")
    assert _mode(tmp_path / "team" / "f") == 0o640


def test_writing_over_a_symlink_replaces_the_link_never_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / "audit.json"
    link.symlink_to(victim)
    write_bytes_atomic(link, b"{}")
    assert victim.read_text() == "keep" and not link.is_symlink() and link.read_bytes() == b"{}"
    assert _mode(link) == 0o600


@needs_root
def test_incident_bundle_copies_regular_files_only(tmp_path: Path) -> None:
    """incident-bundle followed symlinks in journal directories and copied a root-only file."""
    secret = tmp_path / "shadow-like"
    secret.write_text("root-only-secret-8d1c\n")
    secret.chmod(0o600)
    spec = tmp_path / "spec.kv"
    spec.write_text("pipeline.name=b\npipeline.target=SingleRing\npipeline.stages.0.id=a\n")
    attacker = Path("/tmp") / f"byteor-attacker-{uuid.uuid4().hex[:8]}"
    try:
        jdir = attacker / "events"
        with JournalWriter(jdir, segment_bytes=4096, slot_bytes=64, spec_hash=spec_hash(decode_kv(spec.read_bytes()))) \
                as w:
            w.append(b"rec")
        # the journal belongs to the attacker (nobody), who adds what a bundle must not follow
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(attacker)], check=True, timeout=30)
        as_nobody("ln", "-s", str(secret), str(jdir / "seg-00000001.journal"))
        os.link(secret, jdir / "notes.txt")  # a hard link of root's file (root plants it: nobody cannot)
        os.mkfifo(jdir / "pipe")
        out = tmp_path / "bundle"
        res = subprocess.run([str(BIN / "byteor"), "incident-bundle", str(spec), f"--out={out}",
                              f"--journal=events={jdir}"], capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr
        copied = out / "journals" / "events"
        assert sorted(p.name for p in copied.iterdir()) == ["seg-00000000.journal"]
        for p in out.rglob("*"):
            if p.is_file():
                assert b"root-only-secret-8d1c" not in p.read_bytes(), p
        absent = json.loads((out / "bundle_manifest.json").read_text())["absent"]
        assert "a symlink" in absent["journals/events/seg-00000001.journal"]
        assert "2 hard links" in absent["journals/events/notes.txt"]
        assert "a FIFO" in absent["journals/events/pipe"]
    finally:
        shutil.rmtree(attacker, ignore_errors=True)


def test_copy_tree_refuses_a_symlinked_source(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePathError, match="symlink or not a directory"):
        copy_tree_nofollow(tmp_path / "link", tmp_path / "copy")


def _modes_under(root: Path) -> tuple[set[int], set[int]]:
    files = {_mode(p) for p in root.rglob("*") if p.is_file()}
    dirs = {_mode(p) for p in [root, *root.rglob("*")] if p.is_dir()}
    return files, dirs


def test_everything_a_run_and_its_evidence_write_is_private(tmp_path: Path, cli) -> None:
    """Journal segments 0644 in 0755 directories, bundles and policy audits 0644/0755: now 0600/0700."""
    spec = tmp_path / "spec.kv"
    spec.write_text(
        "pipeline.name=modes\npipeline.target=LaneGraph\n"
        "pipeline.lanes.0.name=in\npipeline.lanes.0.kind=journal\npipeline.lanes.0.segment_bytes=65536\n"
        "pipeline.endpoints.0.name=src\npipeline.endpoints.0.direction=ingress\npipeline.endpoints.0.lane=in\n"
        "pipeline.endpoints.1.name=dst\npipeline.endpoints.1.direction=egress\npipeline.endpoints.1.lane=in\n"
    )
    jroot = tmp_path / "journals"
    res = cli("run", str(spec), "--sp", "--input-ascii=hello", f"--journal-dir={jroot}")
    assert res.returncode == 0, res.stderr
    files, dirs = _modes_under(jroot)
    assert files == {0o600} and dirs == {0o700}
    out = tmp_path / "bundle"
    res = cli("incident-bundle", str(spec), f"--out={out}", f"--journal=in={jroot / 'in'}")
    assert res.returncode == 0, res.stderr
    assert _modes_under(out) == ({0o600}, {0o700})
    res = cli("incident-bundle", str(spec), f"--out={tmp_path / 'b2'}", "--tar")
    assert res.returncode == 0, res.stderr
    assert _mode(tmp_path / "b2.tar.gz") == 0o600
    audit = tmp_path / "audit.json"
    res = cli("policy-audit", str(spec), f"--out={audit}", script="byteor-actiongraph")
    assert res.returncode == 0, res.stderr
    assert _mode(audit) == 0o600
