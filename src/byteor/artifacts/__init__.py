"""Operator artifacts: writers and readers for every versioned file byteor leaves behind.

Every reader checks the artifact's schema version and rejects a newer major with
:class:`~byteor.ArtifactError`; every writer has a round-trip test. Field names are the v1 ones (docs/operators.md).
"""

from __future__ import annotations

from .._json import check_version, read_json_object, write_json
from .bundle import (
    CONDITIONAL_FILES,
    MANIFEST,
    REQUIRED_FILES,
    IncidentBundle,
    extract_bundle_tar,
    read_incident_bundle,
    read_manifest,
)
from .environment import (
    REDACTED,
    EnvironmentRecord,
    capture_environment,
    capture_process_environment,
    is_secret_name,
    read_environment,
    redact_env,
    redact_value,
    write_environment,
)
from .incident import BundleRequest, BundleResult, create_incident_bundle
from .replay_audit import (
    ReplayAudit,
    ReplayAuditAction,
    ReplayAuditInput,
    ReplayAuditOutcome,
    ReplayAuditPolicy,
    read_replay_audit,
    write_replay_audit,
)
from .small import (
    RuntimeInfo,
    SpecValidation,
    read_runtime,
    read_spec_validation,
    runtime_info,
    write_runtime,
    write_spec_validation,
)

__all__ = [
    "CONDITIONAL_FILES",
    "MANIFEST",
    "REDACTED",
    "REQUIRED_FILES",
    "BundleRequest",
    "BundleResult",
    "EnvironmentRecord",
    "IncidentBundle",
    "ReplayAudit",
    "ReplayAuditAction",
    "ReplayAuditInput",
    "ReplayAuditOutcome",
    "ReplayAuditPolicy",
    "RuntimeInfo",
    "SpecValidation",
    "capture_environment",
    "capture_process_environment",
    "check_version",
    "create_incident_bundle",
    "extract_bundle_tar",
    "is_secret_name",
    "read_environment",
    "read_incident_bundle",
    "read_json_object",
    "read_manifest",
    "read_replay_audit",
    "read_runtime",
    "read_spec_validation",
    "redact_env",
    "redact_value",
    "runtime_info",
    "write_environment",
    "write_json",
    "write_replay_audit",
    "write_runtime",
    "write_spec_validation",
]
