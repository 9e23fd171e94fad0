"""PostgreSQL through psycopg 3: ``postgresql://USER@HOST:PORT/DB?table=T``.

Ingress consumes a queue table ``T (id bigserial PRIMARY KEY, payload bytea)`` that the operator
creates (with the ``NOTIFY`` trigger, docs/adapters.md); byteor needs only ``SELECT``, ``UPDATE``
locks and ``DELETE`` on it. Rows are claimed in id order with ``SELECT ... FOR UPDATE SKIP LOCKED``
in a transaction of their own, which stays open while their messages are in the pipeline; when the
session commits the position of the claim's last batch (everything of it left egress), the rows are
deleted and that same transaction commits. A crash rolls the transaction back, so the rows are
claimed again, by this instance after a restart or by another one sharing the table: several
instances never hold the same row. ``LISTEN`` on ``?channel=`` (default: the table's name) wakes an
idle source; it also looks every ``?poll=`` seconds, so a missing trigger costs latency only.

Egress writes each flushed batch with ``COPY`` into a session-private temporary table, then
``INSERT ... ON CONFLICT (id) DO NOTHING`` into ``T (id bytea PRIMARY KEY, payload bytea)``, in one
transaction. ``id`` is the SHA-256 of the message, so a batch written again (a retry, a replay after
a crash) inserts nothing twice; identical messages are stored once (docs/adapters.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import AdapterError, UsageError
from ..edges.base import Batch, Ingress, Sink, Source
from ._base import Outage, require
from ._uri import Endpoint

__all__ = ["PostgresSink", "PostgresSource"]

#: transactions one source keeps open at most: the session's window (the ingress capacity) is
#: claimed in halves, so two or three are in flight; one more keeps a claim ready
_MAX_CLAIMS = 4
_CLAIM_MAX = 10_000
_QUEUE_DDL = "CREATE TABLE {t} (id bigserial PRIMARY KEY, payload bytea NOT NULL)"
_SINK_DDL = "CREATE TABLE {t} (id bytea PRIMARY KEY, payload bytea NOT NULL)"


def _table(ep: Endpoint) -> tuple[str, ...]:
    name = ep.require("table")
    parts = tuple(name.split("."))
    if len(parts) > 2 or not all(parts):
        raise UsageError(f"{ep.label} {ep.display}: ?table= must be TABLE or SCHEMA.TABLE, got {name!r}")
    return parts


def _connect(ep: Endpoint, *, autocommit: bool) -> Any:
    psycopg = require("psycopg", "postgresql")
    if len(ep.hosts) != 1:
        raise AdapterError(f"{ep.display}: postgresql:// takes one HOST:PORT")
    host, port = ep.hosts[0]
    try:
        return psycopg.connect(host=host, port=port, dbname=ep.name, user=ep.username, password=ep.password,
                               connect_timeout=max(1, round(ep.connect_timeout)), autocommit=autocommit,
                               application_name="byteor")
    except psycopg.Error as exc:
        raise AdapterError(f"{ep.display}: cannot reach PostgreSQL at {ep.address}: "
                           f"{_first_line(ep, exc)}") from exc


def _first_line(ep: Endpoint, exc: BaseException) -> str:
    text = ep.scrub(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _brief(ep: Endpoint, exc: BaseException) -> AdapterError:
    """A client error as the one line that events and the final error show."""
    return exc if isinstance(exc, AdapterError) else AdapterError(_first_line(ep, exc))


def _check_table(ep: Endpoint, conn: Any, query: Any, ddl: str, ident: Any) -> None:
    """Run ``query`` (which reads the table's columns); a missing table or column is one line
    that names the table and the statement that creates it."""
    psycopg = require("psycopg", "postgresql")
    try:
        conn.execute(query)
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.InvalidColumnReference,
            psycopg.errors.InvalidSchemaName) as exc:
        conn.rollback()
        shown = ident.as_string(conn)
        raise AdapterError(f"{ep.display}: table {shown} is missing or has the wrong shape "
                           f"({_first_line(ep, exc)}); create it: {ddl.format(t=shown)}") from exc
    except psycopg.Error as exc:
        conn.rollback()
        raise AdapterError(f"{ep.display}: cannot use table {'.'.join(_table(ep))}: {_first_line(ep, exc)}") from exc
    conn.rollback()


@dataclass(eq=False)
class _Claim:
    """Rows locked by one open transaction, handed to the session in one or more batches."""

    conn: Any
    ids: list[int]
    handed: int = 0
    committed: int = 0
    #: rows handed to the session so far (skipped ones included): ``ids[:taken]``
    taken: int = 0
    exhausted: bool = False
    rows: list[tuple[int, bytes | None]] = field(default_factory=list)


class PostgresSource(Source):
    acks = True

    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("table", "channel", "poll", "oversize"))
        self.ep = ep
        self.name = ep.display
        self.table = _table(ep)
        self.channel = ep.param("channel") or self.table[-1]
        self.poll = ep.number("poll", 1.0, minimum=0.01)
        self.oversize = ep.choice("oversize", ("fail", "skip"), "fail")
        self.outage = Outage(ep, "ingress")
        self._psycopg: Any = None
        self._listen: Any = None
        self._idle: list[Any] = []          # connections without an open claim
        self._claims: list[_Claim] = []     # open claims, oldest first
        self._current: _Claim | None = None
        self._claim_size = 256
        self._max_bytes: int | None = None
        self._dirty = True                  # a notification (or the start) says rows may be there
        self._next_poll = 0.0
        self._retry_at = 0.0
        self._listen_at = 0.0               # when to try LISTEN again after its connection broke
        self._select: Any = None
        self._delete: Any = None
        self.messages = 0
        self.skipped = 0
        self.deleted = 0
        self.requeued = 0

    def bind(self, ingress: Ingress) -> None:
        self._max_bytes = ingress.slot_bytes
        self._claim_size = max(1, min(_CLAIM_MAX, ingress.capacity // 2))

    def open(self) -> None:
        self._psycopg = require("psycopg", "postgresql")
        from psycopg import sql

        ident = sql.Identifier(*self.table)
        self._select = sql.SQL("SELECT id, payload FROM {} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED").format(ident)
        self._delete = sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(ident)
        conn = _connect(self.ep, autocommit=False)
        self._idle.append(conn)
        try:
            self._check(conn, ident)
            self._listen = self._listener()
        except BaseException:
            self.close()  # the session closes only what opened
            raise
        self.outage.connected()

    def _check(self, conn: Any, ident: Any) -> None:
        from psycopg import sql

        # what a claim and its delete need, checked now (privileges too) rather than at the first row
        _check_table(self.ep, conn, sql.SQL("SELECT id, payload FROM {} LIMIT 0 FOR UPDATE SKIP LOCKED").format(ident),
                     _QUEUE_DDL, ident)
        _check_table(self.ep, conn, sql.SQL("DELETE FROM {} WHERE false").format(ident), _QUEUE_DDL, ident)

    def _listener(self) -> Any:
        from psycopg import sql

        conn = _connect(self.ep, autocommit=True)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        return conn

    # -- claims -------------------------------------------------------------------------------------

    def _claim(self) -> _Claim | None:
        """Lock the next rows nobody else holds, in a transaction of their own (None: none now)."""
        psycopg = self._psycopg
        conn = self._idle.pop() if self._idle else _connect(self.ep, autocommit=False)
        try:
            rows = conn.execute(self._select, (self._claim_size,)).fetchall()
        except psycopg.Error:
            conn.close()
            raise
        if not rows:
            conn.rollback()
            self._idle.append(conn)
            return None
        claim = _Claim(conn, [r[0] for r in rows], rows=rows)
        self._claims.append(claim)
        return claim

    def next_batch(self, max_messages: int) -> Batch | None:
        now = time.monotonic()
        claim = self._current
        if claim is None:
            if now < self._retry_at or len(self._claims) >= _MAX_CLAIMS:
                return Batch(())
            if not self._dirty and now < self._next_poll:
                return Batch(())
            try:
                claim = self._claim()
            except (self._psycopg.OperationalError, AdapterError) as exc:  # the server or the network
                self._retry_at = now + self.outage.failed(_brief(self.ep, exc))
                return Batch(())
            except self._psycopg.Error as exc:  # refused for good (privileges, a dropped table)
                raise AdapterError(f"{self.ep.display}: cannot claim rows of {'.'.join(self.table)}: "
                                   f"{_first_line(self.ep, exc)}") from exc
            self.outage.ok()
            if claim is None:
                self._dirty = False
                self._next_poll = now + self.poll
                return Batch(())
            self._current = claim
        rows = claim.rows[:max_messages]
        del claim.rows[:max_messages]
        claim.taken += len(rows)
        out: list[bytes] = []
        limit = self._max_bytes
        for row_id, payload in rows:
            if payload is None:
                self.skipped += 1
                continue
            if limit is not None and len(payload) > limit:
                if self.oversize == "fail":
                    raise AdapterError(f"{self.ep.display}: row id {row_id} is {len(payload)} bytes, larger than the "
                                       f"ingress slot ({limit} bytes); pass ?oversize=skip to skip such rows")
                self.skipped += 1
                continue
            out.append(payload)
        if not claim.rows:
            claim.exhausted = True
            self._current = None
        if not out:  # nothing for the session to commit: the claim may be done already
            self._finish_if_done(claim)
            return Batch(())
        claim.handed += 1
        self.messages += len(out)
        return Batch(out, claim)

    def commit(self, position: Any) -> None:
        claim: _Claim = position
        claim.committed += 1
        self._finish_if_done(claim)

    def _finish_if_done(self, claim: _Claim) -> None:
        if not claim.exhausted or claim.committed < claim.handed:
            return
        self._claims.remove(claim)
        psycopg = self._psycopg
        try:
            claim.conn.execute(self._delete, (claim.ids,))
            claim.conn.commit()
        except psycopg.OperationalError as exc:
            # the transaction is gone with its locks: the rows are claimed again (by us or another
            # instance), so their messages come once more; at least once, never lost
            self.requeued += len(claim.ids)
            self.outage.mark(_brief(self.ep, exc))
            claim.conn.close()
            return
        except psycopg.Error as exc:
            claim.conn.close()
            raise AdapterError(f"{self.ep.display}: cannot delete processed rows of {'.'.join(self.table)}: "
                               f"{_first_line(self.ep, exc)}") from exc
        self.deleted += len(claim.ids)
        self._idle.append(claim.conn)
        self._dirty = True  # there may be more right behind what we took

    def wait(self, timeout: float) -> None:
        now = time.monotonic()
        if self._current is not None:
            return  # rows in hand
        if len(self._claims) < _MAX_CLAIMS and now >= self._retry_at and (self._dirty or now >= self._next_poll):
            return  # next_batch will look
        until = self._next_poll if len(self._claims) < _MAX_CLAIMS and now >= self._retry_at else now + timeout
        timeout = max(0.0, min(timeout, until - now))
        if self._listen is None:
            if now >= self._listen_at:
                self._listen_at = now + 1.0
                with contextlib.suppress(AdapterError):  # polling goes on; the claims' errors decide about retry_for
                    self._listen = self._listener()
                    self._dirty = True  # a notification sent while nobody listened is lost: look once
                    return
            time.sleep(timeout)
            return
        try:
            for _ in self._listen.notifies(timeout=timeout, stop_after=1):
                self._dirty = True
        except self._psycopg.Error as exc:
            self.outage.mark(_brief(self.ep, exc))
            with contextlib.suppress(Exception):
                self._listen.close()
            self._listen = None
            self._dirty = True

    def close(self) -> None:
        # a claim the run stopped in (--max-messages, a signal) keeps what it handed over and the
        # session committed: those rows are deleted; the rest roll back with the connection and
        # are claimed again later
        for claim in list(self._claims):
            if claim.taken and claim.committed == claim.handed:
                claim.ids = claim.ids[:claim.taken]
                claim.exhausted = True
                self._finish_if_done(claim)
        conns = [c.conn for c in self._claims] + self._idle
        if self._listen is not None:
            conns.append(self._listen)
        self._claims, self._idle, self._listen, self._current = [], [], None, None
        for conn in conns:
            with contextlib.suppress(Exception):  # a broken connection's close must not hide the run's result
                conn.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "postgresql", "table": ".".join(self.table), "channel": self.channel,
                "state": self.outage.state, "messages": self.messages, "deleted": self.deleted,
                "claimed": sum(len(c.ids) for c in self._claims), "requeued": self.requeued,
                "redelivered": self.redelivered, "skipped": self.skipped, "reconnects": self.outage.reconnects}


class PostgresSink(Sink):
    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("table", "batch"))
        self.ep = ep
        self.name = ep.display
        self.table = _table(ep)
        self.batch = ep.integer("batch", 5000, minimum=1)
        self.outage = Outage(ep, "egress")
        self._psycopg: Any = None
        self._conn: Any = None
        self._insert: Any = None
        self._buf: list[bytes] = []
        self.messages = 0
        self.confirmed = 0
        self.duplicates = 0

    def open(self) -> None:
        self._psycopg = require("psycopg", "postgresql")
        from psycopg import sql

        ident = sql.Identifier(*self.table)
        self._insert = sql.SQL("INSERT INTO {} (id, payload) SELECT id, payload FROM byteor_stage "
                               "ON CONFLICT (id) DO NOTHING").format(ident)
        conn = _connect(self.ep, autocommit=False)
        self._conn = conn
        # EXPLAIN plans without writing: it fails without the columns or without a unique id
        _check_table(self.ep, conn, sql.SQL("EXPLAIN INSERT INTO {} (id, payload) SELECT NULL::bytea, NULL::bytea "
                                            "WHERE false ON CONFLICT (id) DO NOTHING").format(ident), _SINK_DDL, ident)
        self._stage(conn)
        self.outage.connected()

    @staticmethod
    def _stage(conn: Any) -> None:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS byteor_stage (id bytea, payload bytea) ON COMMIT DELETE ROWS")
        conn.commit()

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        self._buf.extend(messages)
        self.messages += len(messages)
        if len(self._buf) >= self.batch:
            self.flush()

    def _write_batch(self, buf: list[bytes]) -> int:
        conn = self._conn
        sha256 = hashlib.sha256
        with conn.cursor() as cur:
            with cur.copy("COPY byteor_stage (id, payload) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["bytea", "bytea"])
                write_row = copy.write_row
                for m in buf:
                    write_row((sha256(m).digest(), m))
            cur.execute(self._insert)
            inserted = cur.rowcount
        conn.commit()
        return int(inserted)

    def flush(self) -> None:
        buf = self._buf
        if not buf or self._psycopg is None:
            return
        psycopg = self._psycopg
        while True:
            try:
                if self._conn is None:
                    self._conn = _connect(self.ep, autocommit=False)
                    self._stage(self._conn)
                inserted = self._write_batch(buf)
            except (psycopg.OperationalError, AdapterError) as exc:
                # the transaction did not commit (or its outcome is unknown): write the whole batch
                # again; ON CONFLICT makes a batch that did commit insert nothing twice
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                time.sleep(self.outage.failed(_brief(self.ep, exc)))
                continue
            except psycopg.Error as exc:
                self._conn.rollback()
                raise AdapterError(f"{self.ep.display}: COPY into {'.'.join(self.table)} failed: "
                                   f"{_first_line(self.ep, exc)}") from exc
            break
        self.outage.ok()
        self.confirmed += len(buf)
        self.duplicates += len(buf) - inserted
        self._buf = []

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "postgresql", "table": ".".join(self.table), "state": self.outage.state,
                "messages": self.messages, "confirmed": self.confirmed, "duplicates": self.duplicates,
                "reconnects": self.outage.reconnects}
