"""Sources and sinks: how messages enter and leave a running pipeline (see :mod:`.base`)."""

from __future__ import annotations

from .base import Batch, Ingress, Sink, Source
from .files import CallbackSink, CollectSink, FileSink, FileSource, IterableSource
from .framing import INPUT_FORMATS, OUTPUT_FORMATS, FrameParser, encoder, parse_hex

__all__ = [
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "Batch",
    "CallbackSink",
    "CollectSink",
    "FileSink",
    "FileSource",
    "FrameParser",
    "Ingress",
    "IterableSource",
    "Sink",
    "Source",
    "encoder",
    "parse_hex",
]
