"""The console's evidence: incident bundles of a running pipeline, replay dry-run previews of a
bundle, and what ``redrive`` would send from a pipeline's dead-letter journal.

Each is the package's own machinery, called as the command line calls it: bundles are
:func:`~byteor.artifacts.create_incident_bundle` (``--tar``), previews are
:func:`~byteor.replay.run_replay` in ``dry_run`` mode writing its audit to a temporary path of
their own that is deleted afterwards (never a path of the operator's), and the redrive preview is
:func:`~byteor.actions.redrive.redrive` under the running pipeline's decisions with ``Allow`` turned
into ``DryRunOnly``: it reports what it would re-send and sends nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ArtifactError, ByteorError, SpecError
from .._stage import StageContext
from ..shm import pid_alive
from ..spec.kv import decode_kv, load_spec_file, spec_hash
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1

__all__ = ["BUNDLE_SUFFIX", "RedrivePreview", "bundle_prefix", "journal_lanes", "list_bundles", "redrive_preview",
           "replay_preview", "spec_of", "write_bundle"]

BUNDLE_SUFFIX = ".tar.gz"
#: The most records one preview replays (the replay's own limits apply on top).
MAX_PREVIEW_RECORDS = 1000


def spec_of(session: dict[str, Any] | None, directory: str) -> PipelineSpecV1 | None:
    """The spec a run runs: the canonical text its session state carries, else the ``spec.kv`` a
    LaneGraph keeps in its lane directory; None when neither decodes."""
    text = (session or {}).get("spec_kv")
    try:
        if isinstance(text, str):
            return decode_kv(text.encode("utf-8"))
        path = os.path.join(directory, "spec.kv")
        return load_spec_file(path) if os.path.isfile(path) else None
    except (SpecError, ByteorError):
        return None


def bundle_prefix(session: dict[str, Any]) -> str:
    """``<name>-<hash8>-``: every bundle of this pipeline version starts with it."""
    return f"{session['name']}-{str(session['spec_hash']).removeprefix('sha256:')[:8]}-"


def list_bundles(bundle_dir: str, session: dict[str, Any]) -> list[str]:
    """File names of this pipeline version's bundles in ``bundle_dir``, newest first."""
    prefix = bundle_prefix(session)
    try:
        names = [n for n in os.listdir(bundle_dir) if n.startswith(prefix) and n.endswith(BUNDLE_SUFFIX)]
    except OSError:
        return []
    return sorted(names, reverse=True)


def _spec_file(raw: dict[str, Any], scratch: str) -> str:
    """The run's spec file when it still holds the version that runs (the policy audit then finds
    the approval beside it), else the canonical text written to ``scratch``."""
    path = raw.get("spec_path")
    if isinstance(path, str) and os.path.isfile(path):
        try:
            if spec_hash(load_spec_file(path)) == raw["spec_hash"]:
                return path
        except ByteorError:
            pass
    text = raw.get("spec_kv")
    if not isinstance(text, str):
        raise ArtifactError("this run's session_state.json does not carry its spec (started by an older "
                            "byteor); use `byteor incident-bundle --spec=...`")
    out = os.path.join(scratch, "spec.kv")
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    return out


def write_bundle(directory: str, raw: dict[str, Any], journals: dict[str, str], bundle_dir: str) -> Path:
    """Write an incident bundle of the pipeline running in ``directory`` as ``<bundle_dir>/<name>-
    <hash8>-<UTC time>.tar.gz`` and return its path. ``raw`` is the run's unmasked session state
    (:func:`~byteor.runtime.session_state.read_session_state`); ``journals`` its journal lanes
    (lane -> directory); a SingleRing run's ingress journal and the dead-letter journal are taken
    from ``raw``."""
    from ..artifacts import BundleRequest, create_incident_bundle

    os.makedirs(bundle_dir, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join(bundle_dir, bundle_prefix(raw) + stamp)
    out, n = base, 1
    while os.path.lexists(out + BUNDLE_SUFFIX):
        n += 1
        out = f"{base}-{n}"
    pid = int(raw["pid"])
    # environment.json describes the pipeline's own process when this user may read it
    readable = pid_alive(pid) and os.access(f"/proc/{pid}/environ", os.R_OK)
    lanegraph = raw.get("target") == "LaneGraph"
    journals = dict(journals)
    ingress = raw.get("ingress_journal")
    if isinstance(ingress, str):  # a SingleRing run's record of its input: its lane is the ingress name
        journals[os.path.basename(ingress)] = ingress
    dead_letter = raw.get("dead_letter_dir")
    scratch = tempfile.mkdtemp(prefix="byteor-console-spec-")
    try:
        req = BundleRequest(
            spec_path=_spec_file(raw, scratch), out=out + BUNDLE_SUFFIX,
            ring_path=None if lanegraph else directory, lane_path=directory if lanegraph else None,
            journal_dirs={lane: path for lane, path in journals.items() if os.path.isdir(path)},
            dead_letter_dir=dead_letter if isinstance(dead_letter, str) else None,
            posture=str(raw.get("posture") or "dev"), tar=True, pid=pid if readable else None)
        return create_incident_bundle(req).path
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def replay_preview(bundle: str, journal_lane: str, last_n: int, posture: str) -> dict[str, Any]:
    """The audit a ``replay --mode=dry_run`` of ``bundle`` would write (as JSON), and how many
    outputs it produced. Its audit file lives in a temporary directory removed before returning."""
    from ..replay import ReplayRequest, run_replay

    scratch = tempfile.mkdtemp(prefix="byteor-console-replay-")
    try:
        result = run_replay(ReplayRequest(bundle=bundle, journal_lane=journal_lane, last_n=last_n, mode="dry_run",
                                          posture=posture, out=os.path.join(scratch, "replay-audit.json")))
        return {"audit": result.audit.to_json(), "outputs": len(result.outputs)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class RedrivePreview:
    directory: str | None
    #: one per pending record: {id, stage_key, target, outcome: would_send | skipped, detail}
    records: list[dict[str, Any]]
    why: str | None = None


def redrive_preview(raw: dict[str, Any]) -> RedrivePreview:
    """What ``redrive`` would re-send from the run's dead-letter journal under the decisions the run
    was given (a later ``redrive`` decides afresh, with the approval it is given then)."""
    from ..actions.deadletter import DeadLetterJournal
    from ..actions.redrive import redrive
    from ..policy.decisions import ALLOW, DRY_RUN_ONLY

    directory = raw.get("dead_letter_dir")
    if not isinstance(directory, str):
        return RedrivePreview(None, [], "this pipeline has no side-effecting stage, so no dead-letter journal")
    if not os.path.isdir(directory):
        return RedrivePreview(directory, [], "no dead-letter journal yet: no side effect has finally failed")
    # Allow becomes DryRunOnly, so redrive reports "would re-send" and calls nothing; a decision that
    # would not send now (DryRunOnly, Deny, ...) gets a name redrive does not act on, so it is skipped.
    decisions = {str(p["key"]): DRY_RUN_ONLY if p["decision"] == ALLOW else f"{p['decision']} (not sent)"
                 for p in raw.get("policy") or [] if isinstance(p, dict)}
    ctx = StageContext(posture=str(raw.get("posture") or "dev"), spec_hash=str(raw["spec_hash"]),
                       spec_dir=directory, decisions=decisions)
    try:
        outcomes = redrive(DeadLetterJournal(directory, create=False), ctx)
    except ByteorError as exc:
        return RedrivePreview(directory, [], str(exc))
    records = []
    for o in outcomes:
        rec = o.to_json()
        rec["outcome"] = "would_send" if o.outcome == "dry_run" else o.outcome
        records.append(rec)
    return RedrivePreview(directory, records)


def journal_lanes(spec: PipelineSpecV1 | None, raw: dict[str, Any]) -> list[str]:
    """What a bundle of this run can replay: a LaneGraph's journal lanes, a SingleRing's ingress
    when the run records it (``run --journal-dir``)."""
    if isinstance(spec, LaneGraphSpecV1):
        return [lane.name for lane in spec.lanes if lane.kind == "journal"]
    if isinstance(spec, SingleRingSpecV1) and isinstance(raw.get("ingress_journal"), str):
        return [spec.ingress]
    return []
