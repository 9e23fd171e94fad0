"""Type stubs for byteor._native (hand-written; keep in step with src/byteor/_native/core.c)."""

from collections.abc import Callable, Sequence
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
#: Stage forms of :meth:`Ring.run_stage`: f(msg) -> bytes | None; f(msg) read-only (None drops);
#: f(slot, length) -> length | DROP on a writable scratch view; f(slot, length) on a read-only view.
FORM_MAP: Final[int]
FORM_FILTER: Final[int]
FORM_INPLACE: Final[int]
FORM_READONLY: Final[int]
#: Size of a LaneGraph role's stats file (counters and the batch record of :func:`run_role`).
ROLE_STATS_BYTES: Final[int]

class AttachError(ValueError):
    """A ring file is foreign, truncated, of another layout version, or has another spec hash."""

class Ring:
    """A sequenced shared-memory ring (Disruptor-style). Build with :meth:`create` or :meth:`attach`.

    Sequences start at 0; -1 means "none". Waits release the GIL and run Python signal handlers
    about every 50 ms (an exception from a handler ends the wait). A single-producer ring must have
    exactly one publishing object across all processes.

    On a multi-producer ring each producing object takes a participants-table entry on its first
    claim and records there what it claims before taking it; :meth:`close` gives the entry back. A
    producer that is gone (its pid dead, a zombie, or reused by a process that started later) and
    left claimed slots unpublished leaves a hole: consumers waiting on it repair it after 50 ms
    (at once once stop is requested) by publishing those slots as dropped (``DROPPED_LENGTH``),
    counted in ``snapshot()["repaired"]``. Claims of a live producer are never touched.
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
    def repaired(self) -> int:
        """Slots of a multi-producer ring published as dropped by hole repairs (all processes)."""
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
        what fits and store the cursor once per batch. Returns the last sequence.

        The items are the ones in ``items`` when the call starts: before its first wait on a full
        ring (GIL released) it keeps its own references, so another thread or a signal handler may
        change the list meanwhile. ValueError if the ring is closed while it waits."""
    def claim(self, wait: int = ..., timeout_ns: int = -1) -> int:
        """Reserve the next slot for writing in place (see :meth:`slot`, :meth:`commit`)."""
    def slot(self, seq: int) -> memoryview:
        """Writable view (``slot_bytes`` long) of a claimed slot."""
    def commit(self, seq: int, length: int) -> None:
        """Publish a claimed slot holding ``length`` bytes (single producer: in claim order;
        multi-producer: once, by the object that claimed it, else ValueError)."""
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
    def run_stage(self, c: int, fn: Callable[..., Any], form: int, wait: int = ..., *, heartbeat_slot: int = -1,
                  side_effect: bool = False, contract_error: type[BaseException] | None = None) -> int:
        """Run a Python stage function as consumer ``c`` until stop is set and everything published is
        consumed; returns the last processed sequence.

        The core walks the available sequences and calls ``fn`` once per message in ``form``
        (FORM_MAP ``fn(msg: bytes) -> bytes-like | None``, FORM_FILTER ``fn(msg) -> None`` drops,
        FORM_INPLACE ``fn(slot, length) -> new length | -1`` on a writable view of the consumer's
        scratch, FORM_READONLY ``fn(slot, length) -> length | -1`` on a read-only view of the slot).
        MAP and INPLACE write through the crash-atomic redo record (a stage killed at any instruction
        and restarted changes each message exactly once); the gating cell is released and the
        heartbeat written once per batch, or after every message with ``side_effect``. Views are
        made once, not per message: a view kept past the call stays valid memory but later shows
        another message. A bad return raises TypeError/ValueError (or ``contract_error``, e.g.
        ``byteor.StageContractError``); the function's own exception propagates. Either way the
        exception gets ``failed_seq`` (the failing message's sequence), which stays unconsumed;
        everything before it is released."""
    def drain(self, c: int, max_n: int, wait: int = ..., timeout_ns: int = -1, *,
              release: bool = True) -> tuple[list[bytes], int, int]:
        """Wait (GIL released) until consumer ``c`` may read, then take up to ``max_n`` messages at once
        and release them: (copies of the messages, messages skipped as dropped, last sequence
        taken). ``([], 0, -1)`` on timeout, or when stop is set and everything was consumed. With
        ``release=False`` the cell is left as it was: the caller releases up to the last sequence
        once it has handed the messages on (the next call returns the same messages until then)."""
    def request_stop(self) -> None:
        """Set the stop word and wake every sleeper (call after the last publish: consumers drain)."""
    def clear_stop(self) -> None: ...
    def stop_requested(self) -> bool: ...
    def register_participant(self, role: int, pid: int) -> int:
        """Claim a participants-table slot (reusing one whose process is gone); returns the slot.
        Raises RuntimeError when all are taken by live participants."""
    def repair(self) -> int:
        """Publish as dropped the claimed, unpublished slots at the head of a multi-producer ring that
        no live producer claims (see the class docstring); returns how many (0 on a single-producer
        ring)."""
    def heartbeat(self, slot: int) -> None: ...
    def unregister_participant(self, slot: int, exited: bool = False) -> None: ...
    def participants(self) -> list[tuple[int, int, int, int]]:
        """[(role, pid, heartbeat CLOCK_MONOTONIC ns, state)] of used table entries."""
    def participant_slots(self) -> list[tuple[int, int, int, int, int]]:
        """[(slot, role, pid, heartbeat ns, state)] of used table entries."""
    def snapshot(self) -> dict[str, Any]:
        """cursor, claim, gating, lag, fill, capacity, slot_bytes, n_consumers, participants
        (slot, role, pid, heartbeat ns, state), stop, spec_hash, created_ns, multi_producer,
        now_mono_ns, creator_pid, repaired (slots a hole repair dropped). Reads only."""

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

# --- file edges and codecs (framing.c, core.c): framed input into rings, framed output from a ring ----

def crc32(data: Buffer, value: int = 0, /) -> int:
    """``zlib.crc32``: the shard and route hash the native edges and roles compute."""
def utf8_replace(data: Buffer, /) -> bytes:
    """``data.decode("utf-8", "replace").encode("utf-8")``: the ``ascii`` output framing."""

class Ingest:
    """Framed input from a file descriptor into one ring or N shard rings, parsed in C.

    ``framing``: ``lines`` (one message per line, the ``\\n`` stripped; a last line without one is a
    message), ``hex`` (one message per line as hex digits, whitespace ignored, blank lines skipped),
    ``len32`` (u32 little-endian length, then the bytes). ``route``: ``single`` (one ring),
    ``round_robin``, or ``key`` (CRC-32 of ``msg[key_offset:key_offset+key_len]`` modulo the number of
    rings), exactly as :class:`byteor.runtime.sharding.Router`. Malformed input raises ``error``
    (default ValueError) naming ``label`` and the 1-based line, the byte offset or the message index,
    after every message before it was published. The descriptor is not closed."""

    def __init__(self, fd: int, framing: str, rings: Sequence[Ring], *, route: str = "single",
                 key_offset: int = 0, key_len: int = 0, wait: int = ..., label: str = "--input",
                 error: type[BaseException] = ..., chunk_bytes: int = 1 << 20) -> None: ...
    def run(self) -> int:
        """Read, parse and publish (GIL released; waits while a ring is full) until end of input or
        :meth:`stop`; returns the messages published so far. The Ingest is the rings' producer
        meanwhile. Python signal handlers run about every 50 ms; one that raises ends ``run``."""
    def stop(self) -> None:
        """End :meth:`run` at the next message (from another thread or a signal handler)."""
    @property
    def messages(self) -> int: ...
    @property
    def bytes_read(self) -> int: ...
    @property
    def eof(self) -> bool: ...
    @property
    def lines(self) -> int: ...
    @property
    def per_ring(self) -> tuple[int, ...]: ...

class Egress:
    """Framed output of ring cell ``c`` into a file descriptor, encoded in C.

    ``framing``: ``hex`` (lowercase hex + ``\\n``), ``lines`` (the bytes + ``\\n``), ``ascii`` (UTF-8,
    invalid sequences replaced, + ``\\n``), ``raw`` (the bytes as they are), ``len32`` (u32
    little-endian length before each message: what ``Ingest(..., "len32")`` reads back). Writes go
    through a buffer written whenever the ring is idle and at least every ``flush_interval_ns`` while
    messages flow; the cell is released only up to what was written (:attr:`last_seq`). Dropped
    messages are skipped and counted. The descriptor is not closed."""

    def __init__(self, fd: int, framing: str, ring: Ring, c: int, *, wait: int = ...,
                 label: str = "--output-file", flush_interval_ns: int = 200_000_000,
                 buffer_bytes: int = 1 << 20) -> None: ...
    def run(self) -> int:
        """Consume, encode and write (GIL released) until the ring is stopped and drained, or
        :meth:`stop`; returns the messages written. A write error raises OSError naming ``label``
        (BrokenPipeError when the reader went away: SIGPIPE is held off, never fatal)."""
    def stop(self) -> None:
        """Write what is encoded and end :meth:`run` (from another thread or a signal handler)."""
    @property
    def messages(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def bytes_written(self) -> int: ...
    @property
    def last_seq(self) -> int:
        """The last sequence whose message is written out (and released); -1 before the first."""

# --- LaneGraph roles (core.c) -------------------------------------------------------------------------

def run_role(kind: str, inputs: Sequence[tuple[Ring, int]], outputs: Sequence[tuple[Any, str, str]],
             stats: Buffer, *, route: str = "round_robin", key_offset: int = 0, key_len: int = 0,
             op: str | None = None, delta: int = 0, fn: Callable[..., Any] | None = None, form: int = ...,
             side_effect: bool = False, wait: int = ..., parent_pid: int = 0,
             error: type[BaseException] = ..., contract_error: type[BaseException] | None = None,
             participant_role: int = -1) -> int:
    """Run one LaneGraph role as a native loop until every input is stopped and drained; returns
    the role's messages in (its stats counter).

    ``kind``: ``bridge`` (one input, one output), ``router`` (one input, N outputs; ``route``
    ``round_robin`` or ``key``: CRC-32 of ``msg[key_offset:key_offset+key_len]`` modulo N), ``merge``
    (N inputs taken fairly, one output), ``stage`` (``op`` ``identity``/``add_u8`` with ``delta``, or a
    Python ``fn`` called in ``form`` on a scratch as large as the widest lane; ``side_effect``: one
    message a batch, so a crash repeats at most one side effect). ``inputs``: (Ring, cell).
    ``outputs``: (Ring or JournalWriter, on_full ``block``/``drop_newest``/``fail``, lane name).
    ``stats``: the role's stats file mapping (``ROLE_STATS_BYTES``): counters and heartbeat are kept
    there, and each batch is recorded there before it is published, so a role killed at any point
    and run again completes a half-published batch instead of publishing it twice. A full lane
    under ``fail``, a message too large for a lane, or giving up a blocked wait once ``parent_pid``
    is gone raise ``error`` naming the lane; the stage function's exceptions (and a bad return, as
    ``contract_error`` as in :meth:`Ring.run_stage`) propagate with ``failed_seq``; the stage's drops
    are counted in stats word 3. ``participant_role`` (>= 0, unique per role of the graph): the
    role's entry in each multi-producer output is flagged so that only its own restart repairs what
    it claimed (keeping the slots its batch record publishes, dropping the others)."""
