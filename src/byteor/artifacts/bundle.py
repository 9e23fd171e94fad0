"""Incident bundle directory v1: one directory that captures what ran.

Required files: ``spec.kv`` (canonical when the spec decodes, else the raw bytes as found),
``spec_validation.json``, ``runtime.json``, ``policy_audit.json``, ``environment.json``.
Conditional files: ``runtime_config.txt`` (``--config``), ``single_ring_snapshot.json`` (a ring
path), ``lane_graph_state.json`` (a lane path), ``journals/<lane>/`` (copies of journal lanes).
Additive: ``bundle_manifest.json`` (``bundle_v``, creation time, spec hash, every file with its size
and ``sha256``, and a note for each conditional file that is absent and why), so that the bundle
can be checked for completeness and tampering; a bundle without it still reads as v1.

The writer never overwrites: an existing non-empty output directory is a :class:`UsageError` (exit
2). It works for an undecodable or invalid spec (``spec_validation.json`` says why), against a live
pipeline (snapshots read only) and after a crash (from the files left behind).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ArtifactError, UsageError
from .._fileio import CopyReport, copy_tree_nofollow, open_new
from .._json import check_version, read_json_object, require, write_json
from ..policy.audit import read_policy_audit
from .environment import EnvironmentRecord, read_environment
from .small import RuntimeInfo, SpecValidation, read_runtime, read_spec_validation

__all__ = [
    "CONDITIONAL_FILES",
    "DEAD_LETTER_DIR",
    "JOURNALS_DIR",
    "MANIFEST",
    "REQUIRED_FILES",
    "IncidentBundle",
    "ManifestEntry",
    "check_out_dir",
    "extract_bundle_tar",
    "file_sha256",
    "read_incident_bundle",
    "read_manifest",
    "tar_bundle",
    "write_manifest",
]

REQUIRED_FILES = ("spec.kv", "spec_validation.json", "runtime.json", "policy_audit.json", "environment.json")
CONDITIONAL_FILES = ("runtime_config.txt", "single_ring_snapshot.json", "lane_graph_state.json")
MANIFEST = "bundle_manifest.json"
JOURNALS_DIR = "journals"
#: the run's dead-letter journal (failed side effects), copied when it exists
DEAD_LETTER_DIR = "dead-letter"


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    bytes: int
    sha256: str


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """Refuse an ``out`` that exists and is not an empty directory (UsageError, exit 2)."""
    p = Path(out)
    if p.exists() or p.is_symlink():
        if not p.is_dir() or p.is_symlink():
            raise UsageError(f"{p}: exists and is not a directory; choose a new --out")
        if any(p.iterdir()):
            raise UsageError(
                f"{p}: exists and is not empty; an incident bundle never overwrites, choose a new --out"
            )
    return p


def write_manifest(
    bundle_dir: str | os.PathLike[str],
    *,
    spec_sha256: str | None,
    absent: Mapping[str, str],
    created_unix_ms: int | None = None,
) -> list[ManifestEntry]:
    """Hash every file under ``bundle_dir`` into ``bundle_manifest.json``; return the entries."""
    root = Path(bundle_dir)
    entries: list[ManifestEntry] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(root).as_posix()
        entries.append(ManifestEntry(rel, path.stat().st_size, file_sha256(path)))
    write_json(
        root / MANIFEST,
        {
            "bundle_v": 1,
            "created_unix_ms": created_unix_ms if created_unix_ms is not None else int(time.time() * 1000),
            "spec_sha256": spec_sha256,
            "files": [{"name": e.name, "bytes": e.bytes, "sha256": e.sha256} for e in entries],
            "absent": dict(absent),
        },
    )
    return entries


def read_manifest(bundle_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest (version-checked), or None for a bundle written without one."""
    path = Path(bundle_dir) / MANIFEST
    if not path.exists():
        return None
    obj = read_json_object(path, artifact="incident_bundle")
    check_version(obj, artifact="incident_bundle", field="bundle_v", path=str(path), required=True)
    files = require(obj, "files", list, path=str(path))
    for i, entry in enumerate(files):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("bytes"), int)
        ):
            raise ArtifactError(f"{path}: field `files.{i}` must have name, bytes and sha256")
    return obj


@dataclass(frozen=True)
class IncidentBundle:
    """A bundle read back: the required artifacts parsed, the conditional ones when present."""

    path: Path
    spec_kv: bytes
    spec_validation: SpecValidation
    runtime: RuntimeInfo
    policy_audit: dict[str, Any]
    environment: EnvironmentRecord
    runtime_config: str | None = None
    single_ring_snapshot: dict[str, Any] | None = None
    lane_graph_state: dict[str, Any] | None = None
    journals: dict[str, Path] = field(default_factory=dict)
    #: the copied dead-letter journal (failed side effects, what ``redrive`` would send), if any
    dead_letter: Path | None = None
    manifest: dict[str, Any] | None = None

    def journal_path(self, lane: str) -> Path:
        """The copied journal directory of ``lane``; ArtifactError listing what the bundle has."""
        if lane not in self.journals:
            have = ", ".join(sorted(self.journals)) or "none"
            raise ArtifactError(f"{self.path}: no journal lane {lane!r} in the bundle (journals: {have})")
        return self.journals[lane]


def _read_policy_audit(path: Path) -> dict[str, Any]:
    rec: dict[str, Any] = dict(read_policy_audit(str(path)))
    return rec


def _verify_manifest(root: Path, manifest: dict[str, Any]) -> None:
    for entry in manifest["files"]:
        p = root / entry["name"]
        if not p.is_file():
            raise ArtifactError(f"{root}: file {entry['name']} listed in {MANIFEST} is missing")
        if p.stat().st_size != entry["bytes"] or file_sha256(p) != entry["sha256"]:
            raise ArtifactError(f"{root}: file {entry['name']} does not match its sha256 in {MANIFEST}")


def read_incident_bundle(path: str | os.PathLike[str], *, verify: bool = True) -> IncidentBundle:
    """Read a bundle directory; every required file must be present and well-formed.

    With ``verify`` (default) each file listed in the manifest must match its size and sha256.
    A newer major version of any artifact is an :class:`ArtifactError`.
    """
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"{root}: not an incident bundle directory")
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise ArtifactError(f"{root}: incident bundle is missing required file(s): {', '.join(missing)}")
    manifest = read_manifest(root)
    if manifest is not None and verify:
        _verify_manifest(root, manifest)
    snapshot = None
    if (root / "single_ring_snapshot.json").is_file():
        snapshot = read_json_object(root / "single_ring_snapshot.json", artifact="single_ring_snapshot")
        check_version(
            snapshot,
            artifact="single_ring_snapshot",
            field="snapshot_v",
            path=str(root / "single_ring_snapshot.json"),
        )
    state = None
    if (root / "lane_graph_state.json").is_file():
        state = read_json_object(root / "lane_graph_state.json", artifact="lane_graph_state")
        for version_field in ("state_v", "lane_graph_state_v"):
            if version_field in state:
                check_version(
                    state,
                    artifact="lane_graph_state",
                    field=version_field,
                    path=str(root / "lane_graph_state.json"),
                )
    config = None
    if (root / "runtime_config.txt").is_file():
        config = (root / "runtime_config.txt").read_text(encoding="utf-8", errors="replace")
    journals: dict[str, Path] = {}
    jdir = root / JOURNALS_DIR
    if jdir.is_dir():
        journals = {p.name: p for p in sorted(jdir.iterdir()) if p.is_dir()}
    return IncidentBundle(
        path=root,
        spec_kv=(root / "spec.kv").read_bytes(),
        spec_validation=read_spec_validation(root / "spec_validation.json"),
        runtime=read_runtime(root / "runtime.json"),
        policy_audit=_read_policy_audit(root / "policy_audit.json"),
        environment=read_environment(root / "environment.json"),
        runtime_config=config,
        single_ring_snapshot=snapshot,
        lane_graph_state=state,
        journals=journals,
        manifest=manifest,
        dead_letter=root / DEAD_LETTER_DIR if (root / DEAD_LETTER_DIR).is_dir() else None,
    )


def tar_bundle(bundle_dir: str | os.PathLike[str], tar_path: str | os.PathLike[str]) -> Path:
    """Pack ``bundle_dir`` as one ``.tar.gz`` (top folder = the directory's name), created exclusively,
    without following a link at ``tar_path``, private (mode 0600)."""
    src = Path(bundle_dir)
    dst = Path(tar_path)
    try:
        fd = open_new(dst, os.O_WRONLY)
    except FileExistsError:
        raise UsageError(f"{dst}: already exists; an incident bundle never overwrites") from None
    except OSError as exc:
        raise UsageError(f"{dst}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.add(src, arcname=src.name)
    return dst


def extract_bundle_tar(tar_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a bundle ``.tar.gz`` safely (no absolute paths, links or devices) into ``dest``;
    return the bundle directory inside it."""
    dest_p = Path(dest)
    try:
        with tarfile.open(tar_path, mode="r:*") as tar:
            tar.extractall(dest_p, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{tar_path}: cannot extract the bundle archive: {exc}") from None
    candidates = [p for p in dest_p.iterdir() if p.is_dir()]
    if (dest_p / "spec.kv").is_file():
        return dest_p
    if len(candidates) == 1:
        return candidates[0]
    raise ArtifactError(f"{tar_path}: archive does not hold one bundle directory")


def copy_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> CopyReport:
    """Copy a journal directory's files (not its lock file) without following any link: symlinks,
    hard-linked files, FIFOs and files another user owns are refused and listed in the report, never
    copied (they could make a bundle carry a file its writer cannot read otherwise). Raises
    :class:`~byteor.UnsafePathError` when ``src`` itself is a symlink."""
    # writer.lock is the live writer's flock file, not data: a bundle is read, never appended to.
    return copy_tree_nofollow(src, dst, skip=lambda name: name.endswith(".lock"))
