"""Type stubs for byteor._native (hand-written; keep in step with src/byteor/_native/core.c)."""

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final

from typing_extensions import Buffer

ABI_VERSION: Final[int]
LAYOUT_VERSION: Final[int]
WAIT_SPIN: Final[int]
WAIT_YIELD: Final[int]
WAIT_BACKOFF: Final[int]
WAIT_BLOCK: Final[int]
OP_IDENTITY: Final[int]
OP_ADD_U8: Final[int]
DROPPED_LENGTH: Final[int]
MAX_CONSUMERS: Final[int]
MAX_PARTICIPANTS: Final[int]
PARTICIPANT_FREE: Final[int]
PARTICIPANT_RUNNING: Final[int]
PARTICIPANT_EXITED: Final[int]
HEADER_MIN_BYTES: Final[int]

class AttachError(ValueError):
    """A ring file is foreign, truncated, of another layout version, or has another spec hash."""

class Ring:
    """A sequenced shared-memory ring (Disruptor-style). Build with :meth:`create` or :meth:`attach`.

    Sequences start at 0; -1 means "none". Waits release the GIL and run Python signal handlers
    about every 50 ms (an exception from a handler ends the wait). A single-producer ring must have
    exactly one publishing object across all processes.
    """

    @staticmethod
    def create(path: str, capacity: int, slot_bytes: int, deps: Sequence[int], spec_hash: bytes, *,
               multi_producer: bool = False) -> Ring:
        """Create the file (O_EXCL, 0600). ``deps[i]``: bitmask of consumers consumer i waits for.

        Raises FileExistsError/OSError, or ValueError for a bad geometry or a dependency cycle.
        """
    @staticmethod
    def attach(path: str, *, expect_hash: bytes | None = None) -> Ring:
        """Map an existing ring; raises :class:`AttachError` saying which check failed and why."""
    def close(self) -> None:
        """Unmap now, or when the last slot view / running wait ends. Other methods then raise ValueError."""
    def __enter__(self) -> Ring: ...
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def slot_bytes(self) -> int: ...
    @property
    def n_consumers(self) -> int: ...
    @property
    def deps(self) -> tuple[int, ...]: ...
    @property
    def spec_hash(self) -> bytes: ...
    @property
    def created_ns(self) -> int: ...
    @property
    def multi_producer(self) -> bool: ...
    @property
    def file_bytes(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def path(self) -> str: ...
    # producer
    def publish(self, data: Buffer, wait: int = ..., timeout_ns: int = -1) -> int:
        """Copy ``data`` into the next slot and publish it; returns its sequence.

        Waits (strategy ``wait``) while the slowest consumer is a full ring behind; TimeoutError
        after ``timeout_ns`` (-1: forever). ValueError when ``data`` exceeds ``slot_bytes``.
        """
    def try_publish(self, data: Buffer) -> bool:
        """Publish without waiting; False (nothing written) when the ring is full."""
    def publish_many(self, items: Sequence[Buffer], wait: int = ..., timeout_ns: int = -1) -> int:
        """Publish every item (checked first: nothing is published if one is too long); batches claim
        what fits and store the cursor once per batch. Returns the last sequence."""
    def claim(self, wait: int = ..., timeout_ns: int = -1) -> int:
        """Reserve the next slot for writing in place (see :meth:`slot`, :meth:`commit`)."""
    def slot(self, seq: int) -> memoryview:
        """Writable view (``slot_bytes`` long) of a claimed slot."""
    def commit(self, seq: int, length: int) -> None:
        """Publish a claimed slot holding ``length`` bytes (single producer: in claim order)."""
    # consumers
    def wait_for(self, c: int, seq: int, wait: int = ..., timeout_ns: int = -1) -> int:
        """Highest sequence >= ``seq`` consumer ``c`` may read (publisher and every dependency past it);
        -1 on timeout, or when stop is set and nothing at ``seq`` was published."""
    def read(self, seq: int) -> memoryview:
        """Read-only view of the message (exactly its length; empty when dropped)."""
    def read_bytes(self, seq: int) -> bytes:
        """A copy of the message."""
    def stage_slot(self, seq: int) -> memoryview:
        """Writable view of the whole slot (``slot_bytes``) of a published message (for stages)."""
    def length(self, seq: int) -> int:
        """The message length, or DROPPED_LENGTH."""
    def set_length(self, seq: int, n: int) -> None:
        """Set the message length (0..slot_bytes; DROPPED_LENGTH or -1 to drop)."""
    def release(self, c: int, seq: int) -> None:
        """Consumer ``c`` is done with everything up to ``seq`` (store-release; wakes sleepers)."""
    def gating(self, c: int) -> int: ...
    def next_for(self, c: int) -> int: ...
    def cursor(self) -> int:
        """Highest published sequence."""
    def recover(self, c: int) -> bool:
        """Complete consumer ``c``'s pending crash-atomic modification; True when one was redone.
        Also moves gating(c) up to the last completed modification."""
    def modify_begin(self, c: int, seq: int) -> memoryview:
        """Writable scratch view (``slot_bytes``) holding a copy of message ``seq``; edit it, then
        :meth:`modify_commit`. The slot itself is untouched until the commit."""
    def modify_commit(self, c: int, seq: int, length: int) -> None:
        """Copy the scratch into the slot under the redo marker (a crash mid-copy is completed by
        :meth:`recover`, never lost nor applied twice). ``length`` may be DROPPED_LENGTH."""
    def run_builtin(self, c: int, op: int, delta: int, wait: int = ..., *, heartbeat_slot: int = -1) -> int:
        """Run a builtin stage (OP_IDENTITY / OP_ADD_U8) in C without the GIL until stop is set and
        everything published is consumed; returns the last processed sequence."""
    def count_sink(self, c: int, wait: int = ..., *, heartbeat_slot: int = -1) -> tuple[int, int]:
        """Consume and release until stop + drained; returns (messages, bytes), dropped excluded."""
    def request_stop(self) -> None:
        """Set the stop word and wake every sleeper (call after the last publish: consumers drain)."""
    def clear_stop(self) -> None: ...
    def stop_requested(self) -> bool: ...
    def register_participant(self, role: int, pid: int) -> int:
        """Claim a participants-table slot (reusing one whose pid is dead); returns the slot."""
    def heartbeat(self, slot: int) -> None: ...
    def unregister_participant(self, slot: int, exited: bool = False) -> None: ...
    def participants(self) -> list[tuple[int, int, int, int]]:
        """[(role, pid, heartbeat CLOCK_MONOTONIC ns, state)] of used table entries."""
    def participant_slots(self) -> list[tuple[int, int, int, int, int]]:
        """[(slot, role, pid, heartbeat ns, state)] of used table entries."""
    def snapshot(self) -> dict[str, Any]:
        """cursor, claim, gating, lag, fill, capacity, slot_bytes, n_consumers, participants
        (slot, role, pid, heartbeat ns, state), stop, spec_hash, created_ns, multi_producer,
        now_mono_ns, creator_pid. Reads only."""

# --- DataGuard kernel (dataguard.c): check + redact one USM1 message in one pass ---------------------

class DgPlan:
    """A compiled DataGuard plan; byteor.dataguard.engine builds it from a GuardConfig."""

    def __init__(
        self,
        expected_codec: int,
        schema_id: int,
        msg_type: int,
        msg_version: int,
        row: bool,
        check: bool,
        redact: bool,
        forward_on_reject: bool,
        capacity: int,
        fields: tuple[tuple[bytes, int, bool, int], ...],
        rules: tuple[tuple[int, bytes, int | None, int, int, int, bytes, int], ...],
        hash_key: bytes | None,
        /,
    ) -> None: ...
    def run(self, src: Buffer, out: Buffer, /) -> int:
        """Process one message from ``src`` into ``out``; the new length, or a negative outcome code."""
    def counts(self) -> tuple[int, ...]: ...
    def rule_counts(self) -> tuple[tuple[int, int], ...]: ...

# journal lanes (src/byteor/_native/journal.c; layout in docs/lanegraph.md)
JOURNAL_HEADER_BYTES: Final[int]
JOURNAL_RECORD_HEADER_BYTES: Final[int]
JOURNAL_FORMAT_VERSION: Final[int]
JOURNAL_FLAG_COMMITTED: Final[int]

class JournalSegment:
    """Append/scan records of one mapped journal segment (holds the buffer until :meth:`release`)."""

    def __init__(self, buffer: Buffer, offset: int = 64) -> None: ...
    def append(self, data: Buffer) -> int:
        """Offset of the committed record, or -1 when it does not fit."""
    def reserve(self, n: int) -> int:
        """Offset of a reserved, uncommitted record of ``n`` bytes, or -1."""
    def commit(self, offset: int) -> None: ...
    def scan(self, offset: int) -> tuple[int, int, int]:
        """(status, length, next_offset): 1 committed, 0 nothing committed here, -1 corrupt header."""
    def release(self) -> None: ...
    @property
    def offset(self) -> int: ...
