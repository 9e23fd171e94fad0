"""Kafka through confluent-kafka (librdkafka): ``kafka://HOST:PORT[,HOST:PORT]/TOPIC?group=G``.

Ingress is a consumer in group ``G`` with auto-commit off: offsets are committed (asynchronously,
and once more synchronously at the end) only for messages that left egress; each commit carries, as
metadata, the highest offset fetched so far, so a later member of the group counts the messages it
receives again (``redelivered``). Egress is an idempotent producer (``enable.idempotence``,
``acks=all``); :meth:`KafkaSink.flush` waits for every delivery report. The message is the record's
value; keys and headers are not passed on (egress writes records without a key; ``?partition=N``
pins them to one partition).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from .._errors import AdapterError, UsageError
from ..edges.base import Batch, Ingress, Sink, Source
from ..obs.events import emit
from ._base import Outage, require
from ._uri import Endpoint

__all__ = ["KafkaSink", "KafkaSource"]

_QUIET = logging.getLogger("byteor.adapters.kafka.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _common(ep: Endpoint, outage: Outage) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": ep.address, "logger": _QUIET, "error_cb": outage_cb(outage),
                            "client.id": "byteor"}
    if ep.username or ep.password:
        conf.update({"security.protocol": ep.param("security_protocol", "SASL_PLAINTEXT"),
                     "sasl.mechanism": ep.param("sasl_mechanism", "PLAIN"),
                     "sasl.username": ep.username or "", "sasl.password": ep.password or ""})
    elif ep.param("security_protocol"):
        conf["security.protocol"] = ep.param("security_protocol")
    return conf


def outage_cb(outage: Outage) -> Any:
    def on_error(err: Any) -> None:
        ck = require("confluent_kafka", "kafka")
        if err.code() in (ck.KafkaError._ALL_BROKERS_DOWN, ck.KafkaError._TRANSPORT, ck.KafkaError._RESOLVE):
            outage.mark(err.str())
    return on_error


def _broker_up(stats: dict[str, Any]) -> bool:
    return any(b.get("state") == "UP" for b in stats.get("brokers", {}).values() if b.get("nodeid", 0) >= 0)


class KafkaSource(Source):
    acks = True

    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("group", "offset", "oversize", "security_protocol", "sasl_mechanism"))
        self.ep = ep
        self.name = ep.display
        self.group = ep.require("group")
        self.offset_reset = ep.choice("offset", ("earliest", "latest"), "earliest")
        self.oversize = ep.choice("oversize", ("fail", "skip"), "fail")
        self.outage = Outage(ep, "ingress")
        self._consumer: Any = None
        self._stash: list[Any] = []
        self._want = 1
        self._max_bytes: int | None = None
        self._fetched: dict[int, int] = {}
        self._seen: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._lag: dict[int, int] = {}
        self._assigned: list[int] = []
        self.messages = 0
        self.skipped = 0
        self._missing_topic = False
        self._ck: Any = None

    def bind(self, ingress: Ingress) -> None:
        self._max_bytes = ingress.slot_bytes

    def open(self) -> None:
        ck = self._ck = require("confluent_kafka", "kafka")
        conf = _common(self.ep, self.outage)
        conf.update({"group.id": self.group, "enable.auto.commit": False, "enable.auto.offset.store": False,
                     "auto.offset.reset": self.offset_reset, "statistics.interval.ms": 1000,
                     "stats_cb": self._on_stats, "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                     "reconnect.backoff.max.ms": 2000})
        try:
            self._consumer = ck.Consumer(conf)
            self._consumer.list_topics(self.ep.name, timeout=self.ep.connect_timeout)
        except ck.KafkaException as exc:
            self.close()
            raise AdapterError(f"{self.ep.display}: cannot reach the Kafka broker at {self.ep.address}: "
                               f"{self.ep.scrub(exc.args[0].str() if exc.args else exc)}") from exc
        self._consumer.subscribe([self.ep.name], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.outage.connected()

    # -- callbacks (run inside consume(), on this thread) ---------------------------------------------

    def _on_assign(self, consumer: Any, parts: list[Any]) -> None:
        self._assigned = sorted({*self._assigned, *(tp.partition for tp in parts)})
        try:
            for tp in consumer.committed(parts, timeout=self.ep.connect_timeout):
                meta = getattr(tp, "metadata", None) or ""
                if meta.startswith("fetched="):
                    self._seen[tp.partition] = int(meta.split("=", 1)[1])
                if tp.offset >= 0:
                    self._committed[tp.partition] = tp.offset
        except (self._ck.KafkaException, ValueError):
            pass  # without the previous high-water mark, redeliveries are not counted

    def _on_revoke(self, consumer: Any, parts: list[Any]) -> None:
        gone = {tp.partition for tp in parts}
        self._assigned = [p for p in self._assigned if p not in gone]

    def _on_stats(self, raw: str) -> None:
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        if _broker_up(stats):
            self.outage.ok()
        parts = stats.get("topics", {}).get(self.ep.name, {}).get("partitions", {})
        self._lag = {int(p): int(v["consumer_lag"]) for p, v in parts.items()
                     if p != "-1" and int(v.get("consumer_lag", -1)) >= 0}

    # -- the session's calls -------------------------------------------------------------------------

    def next_batch(self, max_messages: int) -> Batch | None:
        self._want = max_messages
        self.outage.check()
        if self._stash:
            msgs, self._stash = self._stash, []
        else:
            msgs = self._consumer.consume(max_messages, 0)
        if not msgs:
            return Batch(())
        out: list[bytes] = []
        position: dict[int, int] = {}
        limit = self._max_bytes
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == self._ck.KafkaError._PARTITION_EOF:
                    continue
                if err.code() == self._ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                    if not self._missing_topic:  # it may be created later: wait for it, say so once
                        self._missing_topic = True
                        emit("adapter.waiting", f"ingress {self.ep.display}: topic {self.ep.name!r} does not "
                             "exist yet; waiting for it", level="warning", adapter="kafka", endpoint=self.ep.display)
                    continue
                if err.fatal() or not err.retriable():
                    raise AdapterError(f"{self.ep.display}: {self.ep.scrub(err.str())}")
                self.outage.mark(err.str())
                continue
            p, off = m.partition(), m.offset()
            value = m.value() or b""
            position[p] = off + 1
            if off > self._fetched.get(p, -1):
                self._fetched[p] = off
            if off <= self._seen.get(p, -1):
                self.redelivered += 1
            if limit is not None and len(value) > limit:
                if self.oversize == "fail":
                    raise AdapterError(f"{self.ep.display}: record at partition {p} offset {off} is {len(value)} "
                                       f"bytes, larger than the ingress slot ({limit} bytes); pass ?oversize=skip "
                                       "to skip such records")
                self.skipped += 1
                continue
            out.append(value)
        self.messages += len(out)
        return Batch(out, position)

    def wait(self, timeout: float) -> None:
        if not self._stash and self._consumer is not None:
            self._stash = self._consumer.consume(self._want, timeout)

    def commit(self, position: Any) -> None:
        if not position:
            return
        self._committed.update(position)
        self._commit(position, asynchronous=True)

    def _commit(self, position: dict[int, int], *, asynchronous: bool) -> None:
        ck = self._ck
        offsets = [ck.TopicPartition(self.ep.name, p, off, metadata=f"fetched={self._fetched.get(p, off - 1)}")
                   for p, off in position.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except ck.KafkaException as exc:
            # a partition that moved to another member, or a broker away: those messages come again
            self.outage.mark(exc.args[0].str() if exc.args else exc)

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        if self._committed:
            owned = {p: off for p, off in self._committed.items() if p in self._assigned}
            if owned:
                self._consumer = consumer
                self._commit(owned, asynchronous=False)
                self._consumer = None
        with contextlib.suppress(RuntimeError, self._ck.KafkaException):
            consumer.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "kafka", "group": self.group, "state": self.outage.state,
                "partitions": list(self._assigned),
                "committed": {str(p): o for p, o in sorted(self._committed.items())},
                "lag": {str(p): n for p, n in sorted(self._lag.items())}, "messages": self.messages,
                "redelivered": self.redelivered, "skipped": self.skipped, "reconnects": self.outage.reconnects}


class KafkaSink(Sink):
    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("partition", "linger_ms", "security_protocol", "sasl_mechanism"))
        self.ep = ep
        self.name = ep.display
        self.partition = ep.integer("partition", -1) if ep.param("partition") is not None else None
        self.linger_ms = ep.integer("linger_ms", 5)
        self.outage = Outage(ep, "egress")
        self._producer: Any = None
        self._errors: list[str] = []
        self.messages = 0
        self.confirmed = 0
        self._ck: Any = None

    def open(self) -> None:
        ck = self._ck = require("confluent_kafka", "kafka")
        conf = _common(self.ep, self.outage)
        conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": self.linger_ms,
                     "message.timeout.ms": int(self.ep.retry_for * 1000), "on_delivery": self._on_delivery,
                     "statistics.interval.ms": 1000, "stats_cb": self._on_stats})
        try:
            self._producer = ck.Producer(conf)
            md = self._producer.list_topics(self.ep.name, timeout=self.ep.connect_timeout)
        except ck.KafkaException as exc:
            self._producer = None
            raise AdapterError(f"{self.ep.display}: cannot reach the Kafka broker at {self.ep.address}: "
                               f"{self.ep.scrub(exc.args[0].str() if exc.args else exc)}") from exc
        topic = md.topics.get(self.ep.name)
        if self.partition is not None and topic is not None and topic.partitions \
                and self.partition not in topic.partitions:
            raise UsageError(f"--egress {self.ep.display}: topic {self.ep.name!r} has no partition {self.partition}")
        self.outage.connected()

    def _on_stats(self, raw: str) -> None:
        try:
            if _broker_up(json.loads(raw)):
                self.outage.ok()
        except ValueError:
            pass

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.confirmed += 1
        else:
            self._errors.append(err.str())

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        producer = self._producer
        topic = self.ep.name
        part = self.partition
        for m in messages:
            while True:
                try:
                    if part is None:
                        producer.produce(topic, m)
                    else:
                        producer.produce(topic, m, partition=part)
                    break
                except BufferError:  # librdkafka's queue is full: serve delivery reports, then retry
                    producer.poll(0.05)
                    self.outage.check()
        producer.poll(0)
        self.messages += len(messages)

    def flush(self) -> None:
        if self._producer is None:
            return
        left = self._producer.flush(self.ep.retry_for)
        if self._errors:
            first, n = self._errors[0], len(self._errors)
            self._errors = []
            raise AdapterError(f"{self.ep.display}: {n} message(s) not delivered: {self.ep.scrub(first)}")
        if left:
            raise AdapterError(f"{self.ep.display}: {left} message(s) not confirmed by the broker at "
                               f"{self.ep.address} within {self.ep.retry_for:g} s (retry_for)")

    def close(self) -> None:
        # the session flushed before every commit; whatever is still queued (a failed run) is
        # uncommitted upstream and comes again, so a short best-effort flush is enough here
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(min(5.0, self.ep.retry_for))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "kafka", "state": self.outage.state, "messages": self.messages,
                "confirmed": self.confirmed, "reconnects": self.outage.reconnects}
