"""SingleRing execution: the stage registry, the ``--sp`` and multi-process executors, the supervisor.

Public here: :class:`Pipeline` (open a spec, ``publish`` / ``publish_many``, ``outputs``, ``close``).
The stage contract lives in :mod:`byteor._stage`; LaneGraph in
:mod:`byteor.runtime.lanegraph`. Importing this package does not load the native core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import OutputFn, Pipeline

__all__ = ["OutputFn", "Pipeline"]


def __getattr__(name: str) -> Any:
    # loaded on first use: stage processes import this package and never need the run session
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".pipeline", __name__), name)
    globals()[name] = value
    return value
