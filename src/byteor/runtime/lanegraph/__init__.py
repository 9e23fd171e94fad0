"""LaneGraph execution: plan a topology of lanes and roles, run it in one process or many.

Entry points for ``run``/``snapshot``/``compatibility``:

* :func:`run_lanegraph` runs a LaneGraph spec (``sp=True``: one process, deterministic; else one
  process per role under a supervisor, lanes in shared memory).
* :func:`lanegraph_unsupported_reasons` lists what keeps a spec from running on this build.
* :func:`lane_snapshot` reads ``lane_graph_state.json`` of a running (or finished) graph;
  :func:`render_state` turns it into rich tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from ..._errors import ArtifactError, UnsupportedSpecError, UsageError
from ..._stage import StageContext
from ...lanes.journal import FSYNC_POSTURES
from ...spec.kv import spec_hash as compute_spec_hash
from ...spec.model import LaneGraphSpecV1, PipelineSpecV1
from .._tuning import TuningPlan
from ._roles import LaneGraphResult, default_journal_dir, default_lane_path
from .plan import LaneGraphPlan, lanegraph_unsupported_reasons, plan_lanegraph
from .state import STATE_FILE, read_state, render_state, write_state

__all__ = [
    "WAITS",
    "LaneGraphPlan",
    "LaneGraphResult",
    "lane_snapshot",
    "lanegraph_unsupported_reasons",
    "plan_lanegraph",
    "read_state",
    "render_state",
    "run_lanegraph",
]

WAITS = ("spin", "yield", "backoff", "block")


def run_lanegraph(
    spec: PipelineSpecV1,
    *,
    sp: bool,
    inputs: Iterable[bytes],
    outputs: Callable[[str, bytes], None],
    lane_path: str | None = None,
    wait: str = "backoff",
    context: StageContext | None = None,
    spec_hash: str | None = None,
    journal_dir: str | None = None,
    fsync: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    tuning: TuningPlan | None = None,
) -> LaneGraphResult:
    """Run a LaneGraph spec over ``inputs``; each egress message goes to ``outputs(endpoint, msg)``.

    ``lane_path``: directory of the shared-memory lane files and of ``lane_graph_state.json``
    (default ``/dev/shm/byteor/<name>-<hash8>/``); ``journal_dir``: where journal lanes live (default
    ``$BYTEOR_JOURNAL_DIR/<name>-<hash8>``, else ``/var/tmp/byteor/<name>-<hash8>/journal``); ``fsync``:
    the journal posture (default ``$BYTEOR_JOURNAL_FSYNC``, else ``none``); ``tuning``: the profile
    every role process applies (:func:`byteor.runtime._tuning.tune_this_process`; the MP runner
    fills ``tuning.effective`` with what they recorded). ``sp=True`` runs
    every role in the calling thread (lane files are not created; the state file is written only when
    ``lane_path`` is given).

    Raises :class:`~byteor.UnsupportedSpecError` (exit 3) for shapes the runners do not support,
    :class:`~byteor.SpecError` for a stage key that does not resolve, :class:`~byteor.PipelineFailed`
    (exit 1) when a lane with ``on_full=fail`` fills up or a role keeps dying.
    """
    if not isinstance(spec, LaneGraphSpecV1):
        raise UnsupportedSpecError("run_lanegraph runs LaneGraph specs; this spec is SingleRing")
    if wait not in WAITS:
        raise UsageError(f"--wait={wait!r} is not one of {', '.join(WAITS)}")
    plan = plan_lanegraph(spec)
    shash = spec_hash or compute_spec_hash(spec)
    ctx = context or StageContext(spec_hash=shash)
    jdir = journal_dir or default_journal_dir(spec, shash)
    fsync = fsync or os.environ.get("BYTEOR_JOURNAL_FSYNC") or "none"
    if fsync not in FSYNC_POSTURES:
        raise UsageError(f"journal fsync posture {fsync!r} is not one of {', '.join(FSYNC_POSTURES)}")
    if sp:
        from .sp import run_sp

        result = run_sp(spec, plan, inputs=inputs, outputs=outputs, context=ctx, journal_dir=jdir,
                        fsync=fsync, spec_hash=shash, lane_path=lane_path, progress=progress)
        if lane_path is not None:
            os.makedirs(lane_path, exist_ok=True)
            write_state(os.path.join(lane_path, STATE_FILE), result.state)
        return result
    from .mp import run_mp

    return run_mp(spec, plan, inputs=inputs, outputs=outputs, context=ctx, journal_dir=jdir, fsync=fsync,
                  spec_hash=shash, lane_path=lane_path or default_lane_path(spec, shash), wait=wait,
                  progress=progress, tuning=tuning)


def lane_snapshot(lane_path: str) -> dict[str, Any]:
    """The current ``lane_graph_state.json`` under ``lane_path`` (the MP runner refreshes it about
    every 200 ms while running). Raises :class:`~byteor.ArtifactError` if missing or unreadable."""
    path = lane_path if os.path.isfile(lane_path) else os.path.join(lane_path, STATE_FILE)
    if not os.path.exists(path):
        raise ArtifactError(f"{path} does not exist: no LaneGraph state under --lane-path={lane_path} "
                            "(is a graph running there, or did a --sp run write it?)")
    return read_state(path)


