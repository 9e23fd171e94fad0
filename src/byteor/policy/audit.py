"""Policy audit record JSON v1: what policy a spec ran (or would run) under.

Fields, all always present except ``spec``/``error``::

    ok                    bool   the spec parsed and validated
    policy_version        1
    mode                  str    the environment posture the record describes (dev|staging|prod)
    enforced              bool   true when written by a run that enforced the decisions,
                                 false when computed on request (``policy-audit``)
    stage_failure_policy  "stop_pipeline"
    spec_path             str
    lane_path             str | null   the SHM ring/lane path of the run, when there was one
    wait                  str | null   the wait strategy of the run, when there was one
    runtime_crate         {"name": "byteor", "version": <installed version>}
    spec                  object  the parsed spec summary (``describe --json``), when it parsed
    error                 str     why it did not parse or validate, when ``ok`` is false

Additive (older readers ignore it): ``decisions``, a list of ``{index, stage, key, family,
decision, reason}`` for the side-effecting stages, when the caller computed them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .._errors import ArtifactError, SpecError, UsageError
from .._fileio import write_text_atomic
from .._redact import redact_strings
from .._schemas import SCHEMA_VERSIONS
from .._version import DISTRIBUTION, distribution_version
from ..spec.model import PipelineSpecV1

__all__ = ["POLICY_AUDIT_VERSION", "policy_audit_record", "read_policy_audit", "write_policy_audit"]

POLICY_AUDIT_VERSION = SCHEMA_VERSIONS["policy_audit"]
STAGE_FAILURE_POLICY = "stop_pipeline"
_REQUIRED: dict[str, tuple[type, ...]] = {
    "ok": (bool,),
    "policy_version": (int,),
    "mode": (str,),
    "enforced": (bool,),
    "stage_failure_policy": (str,),
    "spec_path": (str,),
    "lane_path": (str, type(None)),
    "wait": (str, type(None)),
    "runtime_crate": (dict,),
}


def policy_audit_record(spec_path: str, *, mode: str, enforced: bool, lane_path: str | None = None,
                        wait: str | None = None, decisions: Iterable[Any] | None = None,
                        spec: PipelineSpecV1 | None = None) -> dict[str, Any]:
    """Build the record for the spec file at ``spec_path`` (or for ``spec`` itself, a spec built in
    Python, with ``spec_path`` as its label). Never raises for a bad spec: an unreadable,
    undecodable or invalid spec gives ``ok=false`` with ``error`` (and ``spec`` when it decoded).
    ``decisions`` are :class:`~byteor.policy.gate.StageDecision` objects or dicts."""
    from ..spec.kv import load_spec_file

    record: dict[str, Any] = {
        "ok": False,
        "policy_version": POLICY_AUDIT_VERSION,
        "mode": mode,
        "enforced": enforced,
        "stage_failure_policy": STAGE_FAILURE_POLICY,
        "spec_path": str(spec_path),
        "lane_path": lane_path,
        "wait": wait,
        "runtime_crate": {"name": DISTRIBUTION, "version": distribution_version()},
    }
    if spec is None:
        try:
            spec = load_spec_file(spec_path)
        except (SpecError, UsageError) as exc:
            record["error"] = _one_line(exc)
            return record
    from ..spec.summary import spec_summary

    record["spec"] = spec_summary(spec)
    try:
        from ..spec.validate import check_v1

        check_v1(spec, path=str(spec_path))
    except SpecError as exc:
        record["error"] = _one_line(exc)
    else:
        record["ok"] = True
    if decisions is not None:
        record["decisions"] = [d if isinstance(d, dict) else d.to_json() for d in decisions]
    return record


def _one_line(exc: Exception) -> str:
    if isinstance(exc, SpecError):
        return "; ".join(exc.lines())
    return str(exc)


def write_policy_audit(path: str, record: dict[str, Any]) -> None:
    """Write the record as JSON (atomic: temp file + rename, mode 0600). Checks the shape first.
    Every string goes through :func:`byteor._redact.redact_strings`: the record of a spec refused for
    carrying a credential must not carry it either."""
    _check(record, where="policy audit record")
    write_text_atomic(path, json.dumps(redact_strings(record), indent=2) + "\n", make_dirs=True)


def read_policy_audit(path: str) -> dict[str, Any]:
    """Read and check a policy audit record. :class:`ArtifactError` when it is missing, not JSON,
    lacks a field, has a wrong type, or has a newer ``policy_version`` than this byteor reads."""
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.read())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: policy audit record does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read policy audit record ({exc})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: policy audit record is not a JSON object")
    _check(obj, where=path)
    return obj


def _check(obj: dict[str, Any], *, where: str) -> None:
    version = obj.get("policy_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > POLICY_AUDIT_VERSION:
        raise ArtifactError(f"{where}: policy_version {version} is newer than this byteor reads "
                            f"({POLICY_AUDIT_VERSION}); upgrade byteor")
    for name, types in _REQUIRED.items():
        if name not in obj:
            raise ArtifactError(f"{where}: field `{name}` is missing")
        value = obj[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ArtifactError(f"{where}: field `{name}` has the wrong type")
    if obj["policy_version"] < 1:
        raise ArtifactError(f"{where}: policy_version must be >= 1")
    crate = obj["runtime_crate"]
    if not isinstance(crate.get("name"), str) or not isinstance(crate.get("version"), str):
        raise ArtifactError(f"{where}: runtime_crate needs string `name` and `version`")
    if "spec" in obj and not isinstance(obj["spec"], dict):
        raise ArtifactError(f"{where}: field `spec` must be an object")
    if "error" in obj and not isinstance(obj["error"], str):
        raise ArtifactError(f"{where}: field `error` must be a string")
    if "spec" not in obj and "error" not in obj:
        raise ArtifactError(f"{where}: needs `spec` (parsed) or `error` (not parsed)")
