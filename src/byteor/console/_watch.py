"""The pipelines the console watches: one :class:`~byteor.runtime.observe.Observer` per running
pipeline directory, sampled at most about once a second however many pages look at it."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..runtime.observe import Observer, pipeline_dirs, rates

__all__ = ["Pipelines", "Sample", "Watch"]

#: Pages and streams asking more often than this share one observation.
_MIN_INTERVAL_S = 0.9
#: Rates over a longer gap than this (nobody watched for a while) say little about now: none then.
_MAX_RATE_GAP_S = 5.0


@dataclass(frozen=True)
class Sample:
    """One observation (:mod:`byteor.runtime.observe`, every string masked) and the rates since the
    previous one (None for the first, or after a long gap)."""

    obs: dict[str, Any]
    rates: dict[str, Any] | None

    @property
    def running(self) -> bool:
        return self.obs["session"] is not None or bool(self.obs.get("rings"))


class Watch:
    """One pipeline directory, known to the pages by its directory name (:attr:`id`)."""

    def __init__(self, ident: str, path: str) -> None:
        self.id = ident
        self.path = path
        self._observer = Observer(path)
        self._lock = threading.Lock()
        self._last: Sample | None = None
        self._at = 0.0

    def sample(self) -> Sample:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._at < _MIN_INTERVAL_S:
                return self._last
            obs = self._observer.observe()
            fresh = self._last is not None and now - self._at <= _MAX_RATE_GAP_S
            self._last = Sample(obs, rates(self._last.obs, obs) if fresh and self._last is not None else None)
            self._at = now
            return self._last

    def close(self) -> None:
        with self._lock:
            self._observer.close()


class Pipelines:
    """Every pipeline running under ``root``. A page names a pipeline by its directory name, and only
    a name found by a scan of ``root`` is ever looked up: a request never builds a path."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._watches: dict[str, Watch] = {}
        self._lock = threading.Lock()

    def scan(self) -> list[Watch]:
        current = {os.path.basename(d): d for d in pipeline_dirs(self.root)}
        with self._lock:
            for ident in [i for i in self._watches if i not in current]:
                self._watches.pop(ident).close()
            for ident, directory in current.items():
                if ident not in self._watches:
                    self._watches[ident] = Watch(ident, directory)
            return [self._watches[i] for i in sorted(current)]

    def get(self, ident: str) -> Watch | None:
        return next((w for w in self.scan() if w.id == ident), None)

    def close(self) -> None:
        with self._lock:
            for watch in self._watches.values():
                watch.close()
            self._watches.clear()
