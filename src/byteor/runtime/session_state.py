"""``session_state.json``: what a running session tells observers, next to its rings or lanes.

Written by the run session of a multi-process run (and of a one-process LaneGraph run given a lane
path) at start, about once a second while it runs, and removed when it ends. ``snapshot``, ``top``,
metrics and the console read it to find a pipeline's identity and its edges without touching the
hot path. Fields (version ``state_v``)::

    state_v, name, spec_hash, target ("SingleRing" | "LaneGraph"), executor ("sp" | "mp"),
    posture, pid, started_unix_ms, updated_unix_ms, ring_path, journal_dir (LaneGraph) | null,
    messages_in, messages_out, dropped, metrics ("HOST:PORT" | null),
    sources: [{endpoint, name, ...}], sinks: [{endpoint, name, ...}],
    spec_path (the file the run was started from | null), spec_kv (the canonical spec.kv text it runs),
    policy: [{stage, index, key, family, decision, reason}] (one per side-effecting stage), dry_run,
    approval: {approval_id, kid, issued_by, issued_at, expires_at, capabilities, required,
               environment_posture, environment_id, key_source} | null (the verified approval in force;
               never the credential), approval_error (why an approval given was not accepted) | null,
    policy_audit (the policy audit record's path) | null, dead_letter_dir | null,
    ingress_journal (SingleRing: where the run records every message it takes, ``--journal-dir``) | null

Each source and sink entry is what its ``describe()`` returned (an adapter adds ``position``,
``lag``, ``connected``...), never a credential: adapters describe themselves with redacted names.
"""

from __future__ import annotations

import os
from typing import Any

from .._json import check_version, read_json_object, require, write_json
from .._schemas import SCHEMA_VERSIONS

__all__ = ["SESSION_STATE_FILE", "read_session_state", "session_state_path", "write_session_state"]

SESSION_STATE_FILE = "session_state.json"
_ARTIFACT = "session_state"


def session_state_path(directory: str) -> str:
    return os.path.join(directory, SESSION_STATE_FILE)


def write_session_state(directory: str, state: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    write_json(session_state_path(directory), {"state_v": SCHEMA_VERSIONS[_ARTIFACT], **state})


def read_session_state(directory: str) -> dict[str, Any] | None:
    """The state under ``directory`` (a ring or lane directory, or a ring file in one), or None
    when there is none. A malformed file is an :class:`~byteor.ArtifactError` naming it."""
    if os.path.isfile(directory):
        directory = os.path.dirname(os.path.abspath(directory))
    path = session_state_path(directory)
    if not os.path.isfile(path):
        return None
    obj = read_json_object(path, artifact=_ARTIFACT)
    check_version(obj, artifact=_ARTIFACT, field="state_v", path=path, required=True)
    for key, typ in (("name", str), ("spec_hash", str), ("target", str), ("executor", str), ("posture", str),
                     ("pid", int), ("started_unix_ms", int), ("updated_unix_ms", int), ("messages_in", int),
                     ("messages_out", int), ("dropped", int), ("sources", list), ("sinks", list)):
        require(obj, key, typ, path=path)
    return obj
