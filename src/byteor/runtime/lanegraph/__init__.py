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

from ..._errors import ArtifactError, UnsupportedSpecError
from ...spec.model import LaneGraphSpecV1, PipelineSpecV1
from ._roles import LaneGraphResult
from .plan import LaneGraphPlan, lanegraph_unsupported_reasons, plan_lanegraph
from .state import STATE_FILE, read_state, render_state

__all__ = [
    "LaneGraphPlan",
    "LaneGraphResult",
    "lane_snapshot",
    "lanegraph_unsupported_reasons",
    "plan_lanegraph",
    "read_state",
    "render_state",
    "run_lanegraph",
]

def run_lanegraph(
    spec: PipelineSpecV1,
    *,
    sp: bool,
    inputs: Iterable[bytes],
    outputs: Callable[[str, bytes], None],
    lane_path: str | None = None,
    wait: str = "backoff",
    posture: str = "dev",
    journal_dir: str | None = None,
    fsync: str | None = None,
    tuning: str | None = None,
) -> LaneGraphResult:
    """Run a LaneGraph spec over ``inputs`` through a :class:`~byteor.runtime.session.RunSession`;
    each egress message goes to ``outputs(endpoint, msg)``. A convenience for tests and scripts:
    :class:`~byteor.Pipeline` is the general API.

    ``lane_path``: directory of the shared-memory lane files and of ``lane_graph_state.json``
    (default ``/dev/shm/byteor/<name>-<hash8>/``); ``journal_dir``: where journal lanes live (default
    ``$BYTEOR_JOURNAL_DIR/<name>-<hash8>``, else ``/var/tmp/byteor/<name>-<hash8>/journal``); ``fsync``:
    the journal posture (default ``$BYTEOR_JOURNAL_FSYNC``, else ``none``). ``sp=True`` runs every role
    in the calling thread (lane files are not created; the state file is written only when
    ``lane_path`` is given).

    Raises :class:`~byteor.UnsupportedSpecError` (exit 3) for shapes the runners do not support,
    :class:`~byteor.SpecError` for a stage key that does not resolve, :class:`~byteor.PipelineFailed`
    (exit 1) when a lane with ``on_full=fail`` fills up or a role keeps dying.
    """
    from ...edges.files import CallbackSink, IterableSource
    from ..session import RunOptions, RunSession

    if not isinstance(spec, LaneGraphSpecV1):
        raise UnsupportedSpecError("run_lanegraph runs LaneGraph specs; this spec is SingleRing")
    session = RunSession(spec, RunOptions(sp=sp, posture=posture, ring_path=lane_path, wait=wait,
                                          journal_dir=journal_dir, fsync=fsync, tuning=tuning))
    sinks: dict[str, Any] = {ep: CallbackSink(lambda key, msg: outputs(str(key), msg), endpoint=ep)
                             for ep in session.egress}
    with session:
        session.start(sinks)
        session.run(IterableSource(inputs))
    summary = session.summary()
    state = session.state or {}
    return LaneGraphResult(messages_in=summary["messages_in"], messages_out=summary["messages_out"],
                           drops=dict(summary.get("drops", {})), state=state)


def lane_snapshot(lane_path: str) -> dict[str, Any]:
    """The current ``lane_graph_state.json`` under ``lane_path`` (the MP runner refreshes it about
    every 200 ms while running). Raises :class:`~byteor.ArtifactError` if missing or unreadable."""
    path = lane_path if os.path.isfile(lane_path) else os.path.join(lane_path, STATE_FILE)
    if not os.path.exists(path):
        raise ArtifactError(f"{path} does not exist: no LaneGraph state under --lane-path={lane_path} "
                            "(is a graph running there, or did a --sp run write it?)")
    return read_state(path)


