"""Schema versions of every versioned format byteor reads or writes (one table, one place).

A reader accepts its own major version and rejects a newer one with a clear message; the
``compatibility`` verb prints this table.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSIONS"]

SCHEMA_VERSIONS: dict[str, int] = {
    "spec_kv": 1,
    "compile_report": 1,
    "incident_bundle": 1,
    "spec_validation": 1,
    "runtime": 1,
    "environment": 1,
    "policy_audit": 1,
    "replay_audit": 1,
    "dataguard_report": 1,
    "single_ring_snapshot": 1,
    "lane_graph_state": 1,
    "session_state": 1,
    "runtime_config": 1,
    "approval_credential": 1,
    #: journal segment files (docs/lanegraph.md): 2 added the spec hash and the record checksum
    "journal": 2,
}
