"""MQTT through paho-mqtt (MQTT 5): ``mqtt://HOST:PORT/TOPIC?qos=1``.

Ingress subscribes to ``TOPIC`` (wildcards allowed; write ``#`` as ``%23``) with a persistent
session (``clean_start=False``, ``?session_expiry=`` seconds, default 3600) under a stable client id
(``?client_id=``; default ``byteor-`` and a hash of the address and topic), and acknowledges each
QoS 1 message (PUBACK) only once it left egress, so the broker sends unacknowledged messages again
after a crash or a reconnect (they arrive with the DUP flag and count as ``redelivered``). Messages
published while no session exists are not kept by the broker: start the ingress once before the
publishers. ``?qos=0`` takes messages at most once. Egress publishes with ``?qos=`` (default 1) and
:meth:`MqttSink.flush` waits for every PUBACK. The message is the payload; the topic and the MQTT 5
properties are not passed on (egress publishes to its own ``TOPIC``, which must have no wildcard).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from .._errors import AdapterError, UsageError
from ..edges.base import Batch, Ingress, Sink, Source
from ._base import Inbox, Outage, require
from ._uri import Endpoint

__all__ = ["MqttSink", "MqttSource"]


def _client(ep: Endpoint, client_id: str, outage: Outage, *, inflight: int) -> Any:
    mqtt = require("paho.mqtt.client", "mqtt")
    if len(ep.hosts) != 1:
        raise AdapterError(f"{ep.display}: mqtt:// takes one HOST:PORT")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if ep.username or ep.password:
        client.username_pw_set(ep.username or "", ep.password)
    client.reconnect_delay_set(0.2, 2)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)

    def on_disconnect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        outage.mark(f"disconnected ({reason})")

    client.on_disconnect = on_disconnect
    return client


def _connect(ep: Endpoint, client: Any, connected: threading.Event, properties: Any, *, clean: bool) -> None:
    host, port = ep.hosts[0]
    try:
        client.connect(host, port, keepalive=10, clean_start=clean, properties=properties)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{ep.display}: cannot reach the MQTT broker at {ep.address}: {ep.scrub(exc)}") from exc
    client.loop_start()
    if not connected.wait(ep.connect_timeout):
        client.loop_stop()
        raise AdapterError(f"{ep.display}: the MQTT broker at {ep.address} did not accept the connection within "
                           f"{ep.connect_timeout:g} s")


class MqttSource(Source):
    acks = True

    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("qos", "client_id", "session_expiry", "oversize"))
        self.ep = ep
        self.name = ep.display
        self.qos = int(ep.choice("qos", ("0", "1"), "1"))
        digest = hashlib.sha256(f"{ep.address}/{ep.name}".encode()).hexdigest()[:12]
        self.client_id = ep.param("client_id") or f"byteor-{digest}"
        self.session_expiry = ep.integer("session_expiry", 3600)
        self.oversize = ep.choice("oversize", ("fail", "skip"), "fail")
        self.outage = Outage(ep, "ingress")
        self._client: Any = None
        self._inbox = Inbox(4096)
        self._max_bytes: int | None = None
        self._gen = 0  # connection generation: a PUBACK for a message id of an earlier connection is not sent
        self._connected = threading.Event()
        self._refused: str | None = None
        self.messages = 0
        self.skipped = 0
        self.acked = 0

    def bind(self, ingress: Ingress) -> None:
        self._max_bytes = ingress.slot_bytes
        self._inbox = Inbox(ingress.capacity)

    def open(self) -> None:
        mqtt = require("paho.mqtt.client", "mqtt")
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client = self._client = _client(self.ep, self.client_id, self.outage, inflight=20)
        client.manual_ack_set(True)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry
        props.ReceiveMaximum = 65535

        def on_connect(c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
            if reason.is_failure:
                self._refused = str(reason)
                self.outage.mark(f"connection refused ({reason})")
                return
            self._gen += 1
            c.subscribe(self.ep.name, qos=self.qos)
            self.outage.ok()
            self._connected.set()

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            if msg.dup:
                self.redelivered += 1
            # blocks the network thread while the pipeline is full: backpressure reaches the broker
            self._inbox.put([(msg.payload, (self._gen, msg.mid, msg.qos))])

        client.on_connect = on_connect
        client.on_message = on_message
        try:
            _connect(self.ep, client, self._connected, props, clean=False)
        except AdapterError:
            self._client = None
            raise
        if self._refused:
            raise AdapterError(f"{self.ep.display}: the MQTT broker refused the connection: {self._refused}")
        del mqtt
        self.outage.connected()

    def next_batch(self, max_messages: int) -> Batch | None:
        self.outage.check()
        items = self._inbox.take(max_messages)
        if not items:
            return Batch(())
        limit = self._max_bytes
        out: list[bytes] = []
        for data, _ in items:
            if limit is not None and len(data) > limit:
                if self.oversize == "fail":
                    raise AdapterError(f"{self.ep.display}: a message is {len(data)} bytes, larger than the ingress "
                                       f"slot ({limit} bytes); pass ?oversize=skip to skip such messages")
                self.skipped += 1
                continue
            out.append(data)
        self.messages += len(out)
        return Batch(out, [tag for _, tag in items])

    def wait(self, timeout: float) -> None:
        self._inbox.wait(timeout)

    def commit(self, position: Any) -> None:
        client = self._client
        if client is None:
            return
        gen = self._gen
        for g, mid, qos in position:
            if qos and g == gen:  # after a reconnect the broker sends these again: those copies get the ack
                client.ack(mid, qos)
        self.acked += len(position)

    def close(self) -> None:
        self.outage.closing = True
        self._inbox.close()
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "mqtt", "client_id": self.client_id, "qos": self.qos,
                "state": self.outage.state, "acked": self.acked, "messages": self.messages,
                "redelivered": self.redelivered, "skipped": self.skipped, "reconnects": self.outage.reconnects}


class MqttSink(Sink):
    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("qos", "client_id", "retain"))
        if any(ch in ep.name for ch in "+#"):
            raise UsageError(f"{ep.label} {ep.display}: an egress topic cannot contain the wildcards + or #")
        self.ep = ep
        self.name = ep.display
        self.qos = int(ep.choice("qos", ("0", "1"), "1"))
        self.retain = ep.choice("retain", ("0", "1"), "0") == "1"
        self.client_id = ep.param("client_id") or f"byteor-out-{uuid.uuid4().hex[:12]}"
        self.outage = Outage(ep, "egress")
        self._client: Any = None
        self._infos: list[Any] = []
        self._connected = threading.Event()
        self.messages = 0
        self.confirmed = 0

    def open(self) -> None:
        client = self._client = _client(self.ep, self.client_id, self.outage, inflight=1000)

        def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
            if not reason.is_failure:
                self.outage.ok()
                self._connected.set()

        client.on_connect = on_connect
        try:
            _connect(self.ep, client, self._connected, None, clean=True)
        except AdapterError:
            self._client = None
            raise
        self.outage.connected()

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        publish = self._client.publish
        topic, qos, retain = self.ep.name, self.qos, self.retain
        self._infos.extend(publish(topic, m, qos, retain) for m in messages)
        self.messages += len(messages)

    def flush(self) -> None:
        infos = self._infos
        if not infos:
            return
        deadline = time.monotonic() + self.ep.retry_for
        for info in infos:
            while not info.is_published():
                if time.monotonic() > deadline:
                    raise AdapterError(f"{self.ep.display}: messages not acknowledged by the MQTT broker at "
                                       f"{self.ep.address} within {self.ep.retry_for:g} s (retry_for)")
                info.wait_for_publish(0.5)
        self.confirmed += len(infos)
        self._infos = []

    def close(self) -> None:
        self.outage.closing = True
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "mqtt", "state": self.outage.state, "messages": self.messages,
                "confirmed": self.confirmed, "reconnects": self.outage.reconnects}
