"""The operator console: a local web page over the pipelines running on this host.

``byteor console`` (:mod:`byteor.cli.console`) serves it. It shows every running pipeline (found
from the ``session_state.json`` beside its rings or lanes), one pipeline's topology as an SVG drawn
by Graphviz from the same graph as ``byteor dot`` with each stage's lag and rate updated every
second over Server-Sent Events, its policy decisions and the approval in force, its dead letters,
DataGuard counters, and two writes: an incident bundle offered as a download, and a replay dry-run
preview of a bundle.

Everything it shows is read through :class:`byteor.runtime.observe.Observer` (the reader metrics
and ``byteor top`` use, which masks every string); bundles are written by
:func:`byteor.artifacts.create_incident_bundle`, previews run :func:`byteor.replay.run_replay`, and
"what redrive would send" is :func:`byteor.actions.redrive.redrive` under decisions that send
nothing. It sits on the top floor beside :mod:`byteor.cli`; starlette and uvicorn come with the
``console`` extra.
"""

from __future__ import annotations

from ._app import DEFAULT_BUNDLE_DIR, ConsoleConfig, create_app, serve

__all__ = ["DEFAULT_BUNDLE_DIR", "ConsoleConfig", "create_app", "serve"]
