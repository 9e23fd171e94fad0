"""Look up a function another byteor area provides, when this build has it.

The bundle and replay code calls into areas that may be absent from a given build (a snapshot
writer, a lane-state reader). ``optional_attr`` returns ``None`` when the module or the name is
missing, so the caller can record *why* a conditional artifact is absent instead of failing.
An ImportError raised *inside* an existing module is not hidden.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["optional_attr"]


def optional_attr(module: str, name: str) -> Any | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            return None
        raise
    return getattr(mod, name, None)
