"""The installed distribution's name and version (runtime.json's ``crate`` fields)."""

from __future__ import annotations

from functools import cache
from importlib import metadata

DISTRIBUTION = "byteor"


@cache
def distribution_version() -> str:
    """The version of the installed ``byteor`` distribution."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
