"""Create an incident bundle (the ``incident-bundle`` verb's engine).

:func:`create_incident_bundle` writes every required file, whatever state the spec is in, then each
conditional file it can find evidence for, and records in the manifest why any conditional file is
absent. Snapshots only read shared memory (never touch a live pipeline's hot path); journal lanes
are copied segment by segment (a record being appended while copying is not committed in the copy,
and journal readers stop cleanly before it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import ArtifactError, ByteorError, SpecError, UnsafePathError, UsageError
from .._fileio import copy_file_nofollow, dir_mode, make_dirs, read_regular_file, write_bytes_exclusive
from .._json import read_json_object, write_json
from .._redact import redact_spec_text, redact_strings, scrub
from ..dataguard.rules import load_rules_file, redact_json_artifact
from ..policy.audit import policy_audit_record, write_policy_audit
from ..runtime.lanegraph.state import read_state, write_state
from ..runtime.session_state import read_session_state
from ..shm import write_ring_snapshot_file
from ..spec.kv import canonical_bytes, decode_kv, spec_hash
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1
from ..spec.validate import check_v1
from .bundle import DEAD_LETTER_DIR, JOURNALS_DIR, ManifestEntry, check_out_dir, copy_tree, tar_bundle, write_manifest
from .environment import capture_environment, capture_process_environment, write_environment
from .small import SpecValidation, write_runtime, write_spec_validation

__all__ = [
    "BundleRequest",
    "BundleResult",
    "create_incident_bundle",
    "default_journal_dir",
    "default_ring_path",
    "describe_spec",
]

DEFAULT_SHM_ROOT = "/dev/shm/byteor"
DEFAULT_JOURNAL_ROOT = "/var/tmp/byteor"
MAX_SPEC_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class BundleRequest:
    spec_path: str
    out: str
    ring_path: str | None = None
    lane_path: str | None = None
    config_path: str | None = None
    journal_dirs: Mapping[str, str] = field(default_factory=dict)
    #: where the run kept its journal lanes (``run --journal-dir``); a SingleRing run's ingress
    #: journal is ``<journal_root>/<ingress>``
    journal_root: str | None = None
    #: the dead-letter journal of the run's action stages (default ``dead-letter/`` next to the spec)
    dead_letter_dir: str | None = None
    posture: str = "dev"
    tar: bool = False
    redact_rules: str | None = None
    args: Sequence[str] | None = None
    env: Mapping[str, str] | None = None
    #: Describe this process in environment.json (e.g. a live pipeline process) instead of ourselves.
    pid: int | None = None


@dataclass(frozen=True)
class BundleResult:
    path: Path
    files: tuple[ManifestEntry, ...]
    absent: dict[str, str]
    spec_ok: bool
    spec_sha256: str | None


def _hash8(spec: PipelineSpecV1) -> str:
    return spec_hash(spec).split(":", 1)[1][:8]


def default_ring_path(spec: PipelineSpecV1) -> str:
    """``/dev/shm/byteor/<name>-<hash8>/``: where the runtime puts a spec's ring or lane files."""
    return os.path.join(DEFAULT_SHM_ROOT, f"{spec.name}-{_hash8(spec)}")


def default_journal_dir(spec: PipelineSpecV1) -> str:
    """``/var/tmp/byteor/<name>-<hash8>/``: journal lanes live in its ``journal/<lane>`` by default."""
    return os.path.join(DEFAULT_JOURNAL_ROOT, f"{spec.name}-{_hash8(spec)}")


def describe_spec(spec: PipelineSpecV1) -> str:
    """A one-line description for spec_validation.json."""
    if isinstance(spec, SingleRingSpecV1):
        return (
            f"SingleRing pipeline {spec.name} ({spec_hash(spec)}): {len(spec.stages)} stage(s), "
            f"{spec.shards} shard(s), ordering {spec.ordering}, "
            f"ring {spec.capacity} x {spec.slot_bytes} bytes"
        )
    kinds = sorted({lane.kind for lane in spec.lanes})
    return (
        f"LaneGraph pipeline {spec.name} ({spec_hash(spec)}): {len(spec.lanes)} lane(s) "
        f"({', '.join(kinds)}), {len(spec.roles)} role(s), {len(spec.endpoints)} endpoint(s), "
        f"on_full {spec.on_full}"
    )


def _read_spec_bytes(path: str) -> bytes:
    try:
        data = read_regular_file(path, MAX_SPEC_BYTES)
    except FileNotFoundError:
        raise UsageError(f"{path}: spec file does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a spec.kv file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read spec file: {exc.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise UsageError(f"{path}: spec file is larger than {MAX_SPEC_BYTES} bytes")
    return data


def _validate(spec_path: str, raw: bytes) -> tuple[PipelineSpecV1 | None, SpecValidation]:
    try:
        spec = decode_kv(raw, path=spec_path)
    except SpecError as exc:
        return None, SpecValidation(False, error=scrub("; ".join(exc.lines())))
    try:
        check_v1(spec, path=spec_path)
    except SpecError as exc:
        return spec, SpecValidation(False, error=scrub("; ".join(exc.lines())))
    return spec, SpecValidation(True, description=describe_spec(spec))


def _bundle_spec_bytes(spec: PipelineSpecV1 | None, raw: bytes, valid: bool) -> bytes:
    """spec.kv for the bundle: the canonical form of a valid spec (validation refuses credentials in
    it), else the spec as found (canonical when it decodes) with every value that may hold a
    credential redacted: a spec refused for carrying a secret must not hand it on."""
    if spec is not None and valid:
        return canonical_bytes(spec)
    # surrogateescape: bytes that are not UTF-8 are kept as found (they may be why it is invalid)
    text = (canonical_bytes(spec) if spec is not None else raw).decode("utf-8", errors="surrogateescape")
    return redact_spec_text(text).encode("utf-8", errors="surrogateescape")


def _policy_audit(
    path: Path,
    req: BundleRequest,
    spec: PipelineSpecV1 | None,
    validation: SpecValidation,
    *,
    wait: str | None,
    lane_path: str | None,
) -> str | None:
    """Write policy_audit.json (the record ``byteor policy-audit`` writes; not enforced: nothing ran)."""
    rec = policy_audit_record(req.spec_path, mode=req.posture, enforced=False, lane_path=lane_path, wait=wait)
    write_policy_audit(str(path), rec)
    return None


def _copy_journal(src: str, dest: Path, lane: str, absent: dict[str, str], *, where: str | None = None) -> None:
    """Copy one journal without following links; what is refused is named in the manifest."""
    where = where or f"{JOURNALS_DIR}/{lane}"
    try:
        report = copy_tree(src, dest)
    except UnsafePathError as exc:
        absent[where] = f"refused: {exc}"
        return
    for name, why in report.refused.items():
        absent[f"{where}/{name}"] = f"refused: {why}"


def _ring_snapshot(ring_path: str, dest: Path) -> str | None:
    """Write single_ring_snapshot.json from the ring files at ``ring_path``; None or why not."""
    if not os.path.exists(ring_path):
        return f"ring path {ring_path} does not exist"
    try:
        write_ring_snapshot_file(ring_path, str(dest))
    except ByteorError as exc:
        return f"cannot snapshot {ring_path}: {exc}"
    return None


def _lane_state(lane_path: str, dest: Path) -> str | None:
    if not os.path.exists(lane_path):
        return f"lane path {lane_path} does not exist"
    try:
        state = read_state(lane_path)
    except ArtifactError as exc:
        return f"no readable lane graph state under {lane_path}: {exc}"
    write_state(str(dest), state)
    return None


def _session_state(paths: Sequence[str], dest: Path) -> str | None:
    """The run's bindings (its sources and sinks, credentials redacted) from session_state.json."""
    for base in paths:
        try:
            state = read_session_state(base)
        except ArtifactError as exc:
            return f"session_state.json under {base} is unreadable: {exc}"
        if state is not None:
            masked = redact_strings(state)
            assert isinstance(masked, dict)
            write_json(dest, masked)
            return None
    return "no session_state.json in the ring / lane directory (no live or killed run there)"


def _journal_lanes(spec: PipelineSpecV1 | None) -> list[str]:
    """The journals a run of ``spec`` may have kept: a LaneGraph's journal lanes, a SingleRing's
    ingress journal (recorded when the run was given ``--journal-dir``)."""
    if isinstance(spec, SingleRingSpecV1):
        return [spec.ingress]
    if isinstance(spec, LaneGraphSpecV1):
        return [lane.name for lane in spec.lanes if lane.kind == "journal"]
    return []


def _find_journal(lane: str, req: BundleRequest, spec: PipelineSpecV1 | None) -> str | None:
    if lane in req.journal_dirs:
        return req.journal_dirs[lane]
    roots: list[str] = [req.journal_root] if req.journal_root else []
    for base in (req.lane_path, default_journal_dir(spec) if spec is not None else None):
        if base:
            roots += [os.path.join(base, "journal"), base]
    for root in roots:
        for name in (lane, f"{lane}.journal", f"journal-{lane}"):
            cand = os.path.join(root, name)
            if os.path.isdir(cand):
                return cand
    return None


def _apply_redact_rules(rules_path: str, root: Path) -> None:
    rules = load_rules_file(rules_path)
    for path in sorted(root.glob("*.json")):
        obj = read_json_object(path, artifact="bundle file")
        write_json(path, redact_json_artifact(obj, rules))


def _publish(root: Path, out: Path) -> Path:
    """Rename the finished bundle onto ``out`` (absent, or an empty directory)."""
    try:
        os.rename(root, out)
    except OSError as exc:
        raise UsageError(
            f"{out}: cannot publish the bundle there ({exc.strerror}); it must be absent or an "
            "empty directory"
        ) from None
    return out


def create_incident_bundle(
    req: BundleRequest, *, progress: Callable[[str], None] | None = None
) -> BundleResult:
    """Write the bundle for ``req``; see the module docstring. Raises UsageError (exit 2) for a
    missing spec file, a non-empty ``--out`` or unreadable explicit inputs; never for a bad spec."""
    say = progress or (lambda _msg: None)
    raw = _read_spec_bytes(req.spec_path)
    if req.config_path is not None and not os.path.isfile(req.config_path):
        raise UsageError(f"{req.config_path}: runtime config file does not exist")
    for lane, jdir in req.journal_dirs.items():
        if not os.path.isdir(jdir):
            raise UsageError(f"{jdir}: journal directory for lane {lane!r} does not exist")
    if req.redact_rules is not None and not os.path.isfile(req.redact_rules):
        raise UsageError(f"{req.redact_rules}: redact rules file does not exist")
    if req.pid is not None and not os.path.exists(f"/proc/{req.pid}"):
        raise UsageError(f"--pid={req.pid}: no such process")
    out = Path(req.out)
    tar_path: Path | None = None
    if req.tar:
        tar_path = out if out.name.endswith(".tar.gz") else out.with_name(out.name + ".tar.gz")
        if tar_path.exists():
            raise UsageError(f"{tar_path}: already exists; an incident bundle never overwrites")
        name = tar_path.name.removesuffix(".tar.gz")
    else:
        check_out_dir(out)
        name = out.name
    parent = (tar_path or out).parent
    try:
        make_dirs(parent)
    except OSError as exc:
        raise UsageError(f"{parent}: cannot create the output directory: {exc.strerror}") from None
    except UnsafePathError as exc:
        raise UsageError(str(exc)) from None
    # Everything is written into a hidden staging directory next to the target and published at the
    # end with one rename (or as one archive): nobody ever sees half a bundle, and a failure leaves
    # nothing behind that would block a retry with the same --out.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent))
    root = staging / name
    os.mkdir(root, dir_mode())
    try:
        created_ms = int(time.time() * 1000)
        absent: dict[str, str] = {}
        say("spec")
        spec, validation = _validate(req.spec_path, raw)
        write_bytes_exclusive(root / "spec.kv", _bundle_spec_bytes(spec, raw, validation.ok))
        write_spec_validation(root / "spec_validation.json", validation)
        write_runtime(root / "runtime.json")
        ring_path = req.ring_path
        if (
            ring_path is None
            and isinstance(spec, SingleRingSpecV1)
            and os.path.exists(default_ring_path(spec))
        ):
            ring_path = default_ring_path(spec)
        lane_path = req.lane_path
        if (
            lane_path is None
            and isinstance(spec, LaneGraphSpecV1)
            and os.path.exists(default_ring_path(spec))
        ):
            lane_path = default_ring_path(spec)
        config_path = req.config_path
        if config_path is None:
            # The runtime records its effective tuning next to its ring / lane files.
            for base in (ring_path, lane_path):
                if base and os.path.isfile(os.path.join(base, "runtime_config.txt")):
                    config_path = os.path.join(base, "runtime_config.txt")
                    break
        wait: str | None = None
        if config_path is not None:
            say("runtime config")
            try:
                copy_file_nofollow(config_path, root / "runtime_config.txt")  # byte for byte, as found
            except UnsafePathError as exc:
                absent["runtime_config.txt"] = f"refused: {exc}"
            else:
                from ..ops.runtime_config import read_runtime_config

                try:
                    wait = read_runtime_config(config_path).wait
                except UsageError as exc:
                    absent["runtime_config.txt (decoded)"] = f"copied as found, but it does not decode: {exc}"
        else:
            absent["runtime_config.txt"] = "no --config given and none next to the ring / lane files"
        say("policy audit")
        note = _policy_audit(
            root / "policy_audit.json", req, spec, validation, wait=wait, lane_path=lane_path or ring_path
        )
        if note:
            absent["policy_audit.json (policy package)"] = note
        say("environment")
        if req.pid is not None:
            record = capture_process_environment(req.pid)
        else:
            record = capture_environment(args=req.args if req.args is not None else sys.argv, env=req.env)
        write_environment(root / "environment.json", record)
        if ring_path is not None:
            say("ring snapshot")
            why = _ring_snapshot(ring_path, root / "single_ring_snapshot.json")
            if why:
                absent["single_ring_snapshot.json"] = why
        else:
            absent["single_ring_snapshot.json"] = (
                "no --ring-path given"
                if not isinstance(spec, SingleRingSpecV1)
                else f"no --ring-path given and {default_ring_path(spec)} does not exist"
            )
        if lane_path is not None:
            say("lane graph state")
            why = _lane_state(lane_path, root / "lane_graph_state.json")
            if why:
                absent["lane_graph_state.json"] = why
        else:
            absent["lane_graph_state.json"] = "no --lane-path given"
        say("session state")
        why = _session_state([p for p in (ring_path, lane_path) if p], root / "session_state.json")
        if why:
            absent["session_state.json"] = why
        lanes = list(dict.fromkeys([*_journal_lanes(spec), *req.journal_dirs]))
        for lane in lanes:
            src = _find_journal(lane, req, spec)
            if src is None:
                absent[f"{JOURNALS_DIR}/{lane}"] = (
                    "journal directory not found" if not isinstance(spec, SingleRingSpecV1)
                    else "not recorded (a SingleRing run records its ingress with --journal-dir)")
                continue
            say(f"journal {lane}")
            (root / JOURNALS_DIR).mkdir(mode=dir_mode(), exist_ok=True)
            _copy_journal(src, root / JOURNALS_DIR / lane, lane, absent)
        dead_letter = req.dead_letter_dir or os.path.join(os.path.dirname(os.path.abspath(req.spec_path)),
                                                          DEAD_LETTER_DIR)
        if os.path.isdir(dead_letter):
            say("dead-letter journal")
            _copy_journal(dead_letter, root / DEAD_LETTER_DIR, DEAD_LETTER_DIR, absent, where=DEAD_LETTER_DIR)
        else:
            absent[DEAD_LETTER_DIR] = f"no dead-letter journal at {dead_letter}"
        if req.redact_rules is not None:
            say("redaction rules")
            _apply_redact_rules(req.redact_rules, root)
        entries = write_manifest(
            root,
            spec_sha256=spec_hash(spec) if spec is not None else None,
            absent=absent,
            created_unix_ms=created_ms,
        )
        if tar_path is not None:
            say("archive")
            final = tar_bundle(root, tar_path)
        else:
            final = _publish(root, out)
        return BundleResult(
            final, tuple(entries), absent, validation.ok, spec_hash(spec) if spec is not None else None
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
