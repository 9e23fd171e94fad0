"""SingleRing execution: the stage registry, the ``--sp`` and multi-process executors, the supervisor.

Public here: :class:`Pipeline` (open a spec, ``publish`` / ``publish_many``, ``outputs``, ``close``).
The stage contract lives in :mod:`byteor._stage`; LaneGraph in
:mod:`byteor.runtime.lanegraph`. Importing this package does not load the native core.
"""

from __future__ import annotations

from .pipeline import OutputFn, Pipeline

__all__ = ["OutputFn", "Pipeline"]
