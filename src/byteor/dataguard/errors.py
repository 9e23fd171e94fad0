"""DataGuard's exceptions: every one is a :class:`byteor.DataGuardError`.

::

    DataGuardError (ValueError)          exit 1
    ├── EnvelopeError                    a USM1 envelope is malformed
    │   ├── BufferTooSmall               fewer bytes than the header or the envelope needs
    │   ├── BadMagic                     the first four bytes are not ``USM1``
    │   ├── BadHeaderLen                 ``header_len`` < 24
    │   ├── BadPayloadLen                ``header_len + payload_len`` exceeds the slot, or > 65535 on encode
    │   └── UnknownFlags                 a flag bit v1 does not define is set
    ├── CodecError                       a mapkv/row payload cannot be decoded or encoded
    ├── RegistryError                    exit 2: the registry cannot serve the required tuple at startup
    └── RuleError                        exit 2: a redaction rule cannot be parsed or does not fit the schema
"""

from __future__ import annotations

from .._errors import DataGuardError

__all__ = [
    "BadHeaderLen",
    "BadMagic",
    "BadPayloadLen",
    "BufferTooSmall",
    "CodecError",
    "DataGuardError",
    "EnvelopeError",
    "RegistryError",
    "RuleError",
    "UnknownFlags",
]


class EnvelopeError(DataGuardError):
    """A USM1 envelope is malformed; the subclass names the exact problem."""


class BufferTooSmall(EnvelopeError):
    """The buffer holds fewer bytes than the header (or the whole envelope) needs."""


class BadMagic(EnvelopeError):
    """The envelope does not start with ``USM1``."""


class BadHeaderLen(EnvelopeError):
    """``header_len`` is below the v1 header length (24)."""


class BadPayloadLen(EnvelopeError):
    """``header_len + payload_len`` does not fit the slot, or a payload is longer than 65535 bytes."""


class UnknownFlags(EnvelopeError):
    """A flag bit that v1 does not define is set."""


class CodecError(DataGuardError):
    """A mapkv or row payload is malformed (truncated varint, bad tag, invalid UTF-8, ...)."""


class RegistryError(DataGuardError):
    """The schema registry cannot serve what a run requires: a startup failure, never a warning."""

    exit_code = 2


class RuleError(DataGuardError):
    """A redaction rule is malformed or cannot apply to its field; the message quotes the rule."""

    exit_code = 2
