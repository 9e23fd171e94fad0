"""Broker adapters: byteor-edgeplane pass-through against each broker's own client loop.

For every broker, in one run, against the same local service (Kafka: librdkafka's mock cluster in
this process), N messages are put in an input topic/subject/stream first, then:

* ``<broker>.raw``: the client library's own consume -> produce loop with the same guarantee
  (produce, wait for the broker's confirmation, then commit/ack the input);
* ``byteor.<broker>``: the run session with the ``<broker>://`` source and sink and one identity
  stage (SingleRing, one process per stage), the way ``byteor-edgeplane run`` runs it;
* Kafka only: ``byteor.kafka.py_map`` (a Python map stage ``bytes.upper``), and the same one-function
  map in ``kafka.quixstreams`` (``sdf.apply``) and ``kafka.bytewax`` (``op.map`` between
  ``KafkaSource`` and ``KafkaSink``), each in its own process.

PostgreSQL and S3 (``store_rows``): ``postgres.copy.raw`` / ``byteor.postgres.copy`` (psycopg's
COPY loop against the ``postgresql://`` sink fed from memory), ``postgres.raw`` / ``byteor.postgres``
(a SKIP LOCKED claim -> COPY -> delete loop against queue table -> table), ``s3.raw`` / ``byteor.s3``
(a boto3 get -> put -> checkpoint loop against prefix -> prefix, moto's server in its own process);
their ratios are printed without a goal.

HTTP and WebSocket (``benchmarks/_web.py``): ``http.raw`` / ``byteor.http`` and ``ws.raw`` /
``byteor.ws``, servers in their own processes under a load generator in this one, goal >= 80 %.

Rates are messages per second from the first message taken to the last one confirmed (connection
set-up and the group join are not counted). Goals: each ``byteor.<broker>`` >= 80 % of
``<broker>.raw``; ``byteor.kafka.py_map`` ahead of ``kafka.quixstreams`` and ``kafka.bytewax``.

    python -m benchmarks.adapters [--quick] [--json PATH] [--only kafka,redis,nats,rabbitmq_stream,mqtt,grpc,store,web]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import Result, parser, print_table, write_json
from benchmarks._web import web_rows

QUIET = logging.getLogger("byteor.bench.kafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False
SPEC = """pipeline.name=edgebench
pipeline.target=SingleRing
pipeline.ring.capacity=4096
pipeline.ring.slot_bytes=128
pipeline.stages.0.id=s0
"""


def _payloads(n: int) -> list[bytes]:
    return [b"order-%08d-" % i + b"x" * 40 for i in range(n)]


# ==================================================================================================
# byteor: the run session with the adapters (what byteor-edgeplane run does)
# ==================================================================================================


def run_byteor(ingress: Any, egress: str, n: int, workdir: Path, stage: str = "identity") -> float:
    from byteor.adapters import open_sink, open_source
    from byteor.cli.edgeplane import LimitedSource, _Budget
    from byteor.edges.base import Batch, Source
    from byteor.runtime.session import RunOptions, RunSession

    spec = workdir / f"edge-{uuid.uuid4().hex[:6]}.kv"
    if stage == "identity":
        spec.write_text(SPEC + "pipeline.stages.0.op=identity\n")
    else:
        (workdir / "bench_map.py").write_text("def upper(msg):\n    return msg.upper()\n")
        spec.write_text(SPEC + "pipeline.stages.0.op=resolver\npipeline.stages.0.resolver_key=py:bench_map:upper\n")
    first: list[float] = []

    class Clock(LimitedSource):
        def next_batch(self, max_messages: int) -> Batch | None:
            batch = super().next_batch(max_messages)
            if batch is not None and batch.messages and not first:
                first.append(time.perf_counter())
            return batch

    source: Source = Clock(open_source(ingress) if isinstance(ingress, str) else ingress, _Budget(n, None))
    session = RunSession(str(spec), RunOptions(ring_path=f"/dev/shm/byteor/bench-edge-{uuid.uuid4().hex[:8]}"))
    with session:
        session.start(open_sink(egress))
        session.run(source)
    end = time.perf_counter()
    return n / (end - first[0])


# ==================================================================================================
# Kafka
# ==================================================================================================


class Kafka:
    def __init__(self) -> None:
        import confluent_kafka as ck

        self.ck = ck
        self.owner = ck.Producer({"test.mock.num.brokers": 1, "logger": QUIET})
        self.bootstrap = ",".join(f"{b.host}:{b.port}" for b in self.owner.list_topics(timeout=10).brokers.values())

    def fill(self, n: int) -> tuple[str, str]:
        uid = uuid.uuid4().hex[:8]
        p = self.ck.Producer({"bootstrap.servers": self.bootstrap, "logger": QUIET, "linger.ms": 5})
        for m in _payloads(n):
            p.produce(f"in-{uid}", m)
        p.flush(60)
        return f"in-{uid}", f"out-{uid}"

    def raw(self, n: int) -> float:
        ck = self.ck
        t_in, t_out = self.fill(n)
        c = ck.Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"raw-{t_in}", "logger": QUIET,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        p = ck.Producer({"bootstrap.servers": self.bootstrap, "logger": QUIET, "enable.idempotence": True,
                         "linger.ms": 5})
        c.subscribe([t_in])
        done = 0
        t0 = None
        while done < n:
            msgs = [m for m in c.consume(2048, 1.0) if m.error() is None]
            if not msgs:
                continue
            t0 = t0 or time.perf_counter()
            for m in msgs:
                p.produce(t_out, m.value())
            p.flush(30)
            c.commit(asynchronous=True)
            done += len(msgs)
        c.commit(asynchronous=False)
        rate = n / (time.perf_counter() - (t0 or 0))
        c.close()
        return rate

    def byteor(self, n: int, workdir: Path, stage: str = "identity") -> float:
        t_in, t_out = self.fill(n)
        return run_byteor(f"kafka://{self.bootstrap}/{t_in}?group=b-{t_in}", f"kafka://{self.bootstrap}/{t_out}",
                          n, workdir, stage)

    def peer(self, which: str, n: int, timeout: float) -> float:
        """quixstreams or bytewax doing the same one-function map, in a process of its own."""
        t_in, t_out = self.fill(n)
        code = PEERS[which].format(bootstrap=self.bootstrap, t_in=t_in, t_out=t_out, n=n)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError((proc.stderr.strip().splitlines() or ["failed"])[-1])
        return float(proc.stdout.strip().splitlines()[-1])


PEERS = {
    "quixstreams": textwrap.dedent("""
        import time, logging
        from quixstreams import Application
        app = Application(broker_address="{bootstrap}", consumer_group="quix-{t_in}", auto_offset_reset="earliest",
                          auto_create_topics=False, use_changelog_topics=False, loglevel="ERROR",
                          consumer_extra_config={{"logger": logging.getLogger("q")}},
                          producer_extra_config={{"logger": logging.getLogger("q")}})
        src = app.topic("{t_in}", value_deserializer="bytes")
        dst = app.topic("{t_out}", value_serializer="bytes")
        first = []
        def upper(v):
            if not first:
                first.append(time.perf_counter())
            return v.upper()
        sdf = app.dataframe(src).apply(upper)
        sdf.to_topic(dst)
        app.run(count={n}, timeout=120, collect=False)
        print({n} / (time.perf_counter() - first[0]))
    """),
    "bytewax": textwrap.dedent("""
        import time
        import bytewax.operators as op
        from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
        from bytewax.dataflow import Dataflow
        from bytewax.testing import run_main
        first = []
        def upper(msg):
            if not first:
                first.append(time.perf_counter())
            return KafkaSinkMessage(None, msg.value.upper())
        flow = Dataflow("bench")
        inp = op.input("in", flow, KafkaSource(["{bootstrap}"], ["{t_in}"], tail=False,
                                               add_config={{"group.id": "bw-{t_in}"}}))
        op.output("out", op.map("upper", inp, upper), KafkaSink(["{bootstrap}"], "{t_out}"))
        run_main(flow)
        print({n} / (time.perf_counter() - first[0]))
    """),
}


# ==================================================================================================
# Redis Streams
# ==================================================================================================


class Redis:
    def __init__(self) -> None:
        import redis

        self.r = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=10)
        self.keys: list[str] = []

    def fill(self, n: int) -> tuple[str, str]:
        uid = uuid.uuid4().hex[:8]
        k_in, k_out = f"byteor-bench:{uid}:in", f"byteor-bench:{uid}:out"
        self.keys += [k_in, k_out]
        pipe = self.r.pipeline(transaction=False)
        for m in _payloads(n):
            pipe.xadd(k_in, {"data": m})
        pipe.execute()
        self.r.xgroup_create(k_in, "g", id="0")
        return k_in, k_out

    def raw(self, n: int) -> float:
        k_in, k_out = self.fill(n)
        r = self.r
        done = 0
        t0 = None
        while done < n:
            res = r.xreadgroup("g", "c", {k_in: ">"}, count=2048, block=1000)
            if not res:
                continue
            t0 = t0 or time.perf_counter()
            entries = res[0][1]
            pipe = r.pipeline(transaction=False)
            for _id, fields in entries:
                pipe.xadd(k_out, {"data": fields[b"data"]})
            pipe.execute()
            r.xack(k_in, "g", *[e[0] for e in entries])
            done += len(entries)
        return n / (time.perf_counter() - (t0 or 0))

    def byteor(self, n: int, workdir: Path) -> float:
        k_in, k_out = self.fill(n)
        return run_byteor(f"redis://127.0.0.1:6379/{k_in}?group=g&consumer=b", f"redis://127.0.0.1:6379/{k_out}",
                          n, workdir)

    def close(self) -> None:
        if self.keys:
            self.r.delete(*self.keys)


# ==================================================================================================
# NATS JetStream
# ==================================================================================================


class Nats:
    def __init__(self) -> None:
        self.streams: list[str] = []

    async def _fill(self, n: int) -> tuple[str, str]:
        import nats
        from nats.js.api import StreamConfig

        uid = uuid.uuid4().hex[:8]
        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream(publish_async_max_pending=20000)
        for s in (f"BIN_{uid}", f"BOUT_{uid}"):
            await js.add_stream(StreamConfig(name=s, subjects=[f"{s}.x"]))
            self.streams.append(s)
        for m in _payloads(n):
            await js.publish_async(f"BIN_{uid}.x", m)
        await js.publish_async_completed()
        await nc.close()
        return f"BIN_{uid}", f"BOUT_{uid}"

    def fill(self, n: int) -> tuple[str, str]:
        return asyncio.run(self._fill(n))

    def raw(self, n: int) -> float:
        s_in, s_out = self.fill(n)

        async def go() -> float:
            import nats
            from nats.js.api import AckPolicy, ConsumerConfig

            nc = await nats.connect("nats://127.0.0.1:4222")
            js = nc.jetstream(publish_async_max_pending=20000)
            sub = await js.pull_subscribe(f"{s_in}.x", durable="raw", stream=s_in,
                                          config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20000))
            done, t0 = 0, None
            while done < n:
                try:
                    msgs = await sub.fetch(512, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                t0 = t0 or time.perf_counter()
                for m in msgs:
                    await js.publish_async(f"{s_out}.x", m.data)
                await js.publish_async_completed()
                for m in msgs:
                    await m.ack()
                done += len(msgs)
            await nc.flush()
            rate = n / (time.perf_counter() - (t0 or 0))
            await nc.close()
            return rate

        return asyncio.run(go())

    def byteor(self, n: int, workdir: Path) -> float:
        s_in, s_out = self.fill(n)
        return run_byteor(f"nats://127.0.0.1:4222/{s_in}.x?stream={s_in}&durable=b",
                          f"nats://127.0.0.1:4222/{s_out}.x?stream={s_out}", n, workdir)

    def close(self) -> None:
        async def go() -> None:
            import nats

            nc = await nats.connect("nats://127.0.0.1:4222")
            js = nc.jetstream()
            for s in self.streams:
                with contextlib.suppress(Exception):
                    await js.delete_stream(s)
            await nc.close()

        asyncio.run(go())


# ==================================================================================================
# RabbitMQ Streams
# ==================================================================================================


class Rabbit:
    def __init__(self) -> None:
        self.streams: list[str] = []

    def fill(self, n: int) -> tuple[str, str]:
        uid = uuid.uuid4().hex[:8]
        s_in, s_out = f"byteor-bench-{uid}-in", f"byteor-bench-{uid}-out"

        async def go() -> None:
            from rstream import AMQPMessage, Producer

            p = Producer("127.0.0.1", 5552, username="guest", password="guest")
            await p.start()
            for s in (s_in, s_out):
                await p.create_stream(s, exists_ok=True)
                self.streams.append(s)
            data = _payloads(n)
            for i in range(0, n, 500):
                await p.send_batch(s_in, [AMQPMessage(body=m) for m in data[i:i + 500]])
            await asyncio.sleep(0.5)
            await p.close()

        asyncio.run(go())
        return s_in, s_out

    def raw(self, n: int) -> float:
        s_in, s_out = self.fill(n)

        async def go() -> float:
            from rstream import AMQPMessage, Consumer, ConsumerOffsetSpecification, OffsetType, Producer, amqp_decoder

            p = Producer("127.0.0.1", 5552, username="guest", password="guest")
            c = Consumer("127.0.0.1", 5552, username="guest", password="guest")
            await p.start()
            await c.start()
            queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(8192)

            async def cb(msg: Any, ctx: Any) -> None:
                await queue.put((bytes(msg.body), ctx.offset))

            await c.subscribe(s_in, cb, decoder=amqp_decoder, subscriber_name="raw",
                              offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None))
            done, t0 = 0, None
            while done < n:
                item = await queue.get()
                t0 = t0 or time.perf_counter()
                batch = [item]
                while not queue.empty() and len(batch) < 2048:
                    batch.append(queue.get_nowait())
                for i in range(0, len(batch), 500):
                    part = batch[i:i + 500]
                    confirmed = asyncio.Event()
                    left = [len(part)]

                    def on_confirm(_status: Any, left: list[int] = left, ev: asyncio.Event = confirmed) -> None:
                        left[0] -= 1
                        if left[0] == 0:
                            ev.set()

                    await p.send_batch(s_out, [AMQPMessage(body=b) for b, _ in part], on_publish_confirm=on_confirm)
                    await confirmed.wait()
                await c.store_offset(s_in, "raw", batch[-1][1])
                done += len(batch)
            rate = n / (time.perf_counter() - (t0 or 0))
            await c.close()
            await p.close()
            return rate

        return asyncio.run(go())

    def byteor(self, n: int, workdir: Path) -> float:
        s_in, s_out = self.fill(n)
        return run_byteor(f"rabbitmq-stream://127.0.0.1:5552/{s_in}?consumer=b",
                          f"rabbitmq-stream://127.0.0.1:5552/{s_out}", n, workdir)

    def close(self) -> None:
        async def go() -> None:
            from rstream import Producer

            p = Producer("127.0.0.1", 5552, username="guest", password="guest")
            await p.start()
            for s in self.streams:
                with contextlib.suppress(Exception):
                    await p.delete_stream(s)
            await p.close()

        asyncio.run(go())


# ==================================================================================================
# MQTT (QoS 1)
# ==================================================================================================


class Mqtt:
    """MQTT keeps nothing for a topic without a session, so the input is published while the
    consumer (raw or byteor) is connected; the rate is that of the whole flow."""

    def _publish(self, topic: str, n: int, delay: float) -> threading.Thread:
        import paho.mqtt.client as mqtt

        def go() -> None:
            time.sleep(delay)
            p = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            p.max_inflight_messages_set(1000)
            p.connect("127.0.0.1", 1883)
            p.loop_start()
            infos = [p.publish(topic, m, qos=1) for m in _payloads(n)]
            for info in infos:
                info.wait_for_publish(60)
            p.disconnect()
            p.loop_stop()

        t = threading.Thread(target=go, daemon=True)
        t.start()
        return t

    def raw(self, n: int) -> float:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        uid = uuid.uuid4().hex[:8]
        t_in, t_out = f"byteor-bench/{uid}/in", f"byteor-bench/{uid}/out"
        got: list[tuple[bytes, int]] = []
        lock = threading.Condition()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{uid}", protocol=mqtt.MQTTv5)
        c.manual_ack_set(True)

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            with lock:
                got.append((msg.payload, msg.mid))
                lock.notify()

        c.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = 65535
        c.connect("127.0.0.1", 1883, clean_start=True, properties=props)
        c.subscribe(t_in, qos=1)
        c.loop_start()
        out = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        out.max_inflight_messages_set(1000)
        out.connect("127.0.0.1", 1883)
        out.loop_start()
        time.sleep(0.5)
        pub = self._publish(t_in, n, 0.0)
        done, t0 = 0, None
        while done < n:
            with lock:
                while not got:
                    lock.wait(1.0)
                batch, got[:] = list(got), []
            t0 = t0 or time.perf_counter()
            infos = [out.publish(t_out, m, qos=1) for m, _ in batch]
            for info in infos:
                info.wait_for_publish(30)
            for _, mid in batch:
                c.ack(mid, 1)
            done += len(batch)
        rate = n / (time.perf_counter() - (t0 or 0))
        pub.join()
        for cl in (c, out):
            cl.disconnect()
            cl.loop_stop()
        return rate

    def byteor(self, n: int, workdir: Path) -> float:
        uid = uuid.uuid4().hex[:8]
        t_in = f"byteor-bench/{uid}/in"
        self._publish(t_in, n, 1.5)  # once the byteor session is subscribed
        return run_byteor(f"mqtt://127.0.0.1:1883/{t_in}?client_id=bench-{uid}&session_expiry=60",
                          f"mqtt://127.0.0.1:1883/byteor-bench/{uid}/out", n, workdir)


# ==================================================================================================
# gRPC ingress: a pool of streaming clients in a process of their own against each server
# ==================================================================================================

GRPC_CLIENTS = textwrap.dedent("""
    import asyncio, json, sys, time
    import grpc
    from byteor.adapters._grpc import byteor_edge_pb2 as pb, byteor_edge_pb2_grpc as pbg
    port, n, clients, per_call, per_message = map(int, sys.argv[1:6])
    payloads = [b"order-%08d-" % i + b"x" * 40 for i in range(n)]
    calls = [payloads[i:i + per_call] for i in range(0, n, per_call)]
    latencies = []

    async def client(stub, mine):
        for call in mine:
            messages = [pb.Message(payloads=call[i:i + per_message]) for i in range(0, len(call), per_message)]
            t = time.perf_counter()
            ack = await stub.Publish(iter(messages), wait_for_ready=True, timeout=120)
            latencies.append(time.perf_counter() - t)
            assert ack.accepted == len(call), ack

    async def main():
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(clients)]
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 60)
        t0 = time.perf_counter()
        await asyncio.gather(*(client(pbg.EdgeStub(ch), calls[k::clients]) for k, ch in enumerate(channels)))
        elapsed = time.perf_counter() - t0
        latencies.sort()
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6
        print(json.dumps({"rate": n / elapsed, "p50_us": pick(0.50), "p99_us": pick(0.99)}))
        for ch in channels:
            await ch.close()

    asyncio.run(main())
""")


class Grpc:
    """``grpc.raw`` (a minimal grpc.aio server whose Publish only appends the payloads to a list and
    answers) against ``byteor.grpc`` (the edgeplane session behind ``grpc://`` ingress, acknowledging
    each call once its messages are committed, egress to /dev/null) and ``byteor.grpc.ack_ring``
    (acknowledged once in the ring), under the same client pool: ``clients`` concurrent streams, each
    Publish carrying ``per_call`` messages, ``per_message`` payloads per Message."""

    clients, per_call, per_message = 16, 512, 64

    def _free_port(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def _load(self, port: int, n: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", GRPC_CLIENTS, str(port), str(n), str(self.clients),
                                 str(self.per_call), str(self.per_message)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @staticmethod
    def _result(name: str, proc: subprocess.Popen[str], note: str) -> Result:
        out, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError((err.strip().splitlines() or ["client pool failed"])[-1])
        got = json.loads(out.strip().splitlines()[-1])
        return Result(name, msgs_per_s=got["rate"], p50_us=got["p50_us"], p99_us=got["p99_us"], note=note)

    def raw(self, n: int) -> Result:
        import grpc

        from byteor.adapters._grpc import byteor_edge_pb2 as pb
        from byteor.adapters._grpc import byteor_edge_pb2_grpc as pbg

        kept: list[bytes] = []

        class Raw(pbg.EdgeServicer):  # type: ignore[misc]
            async def Publish(self, request_iterator: Any, context: Any) -> Any:
                count = 0
                async for message in request_iterator:
                    kept.extend(message.payloads)
                    count += len(message.payloads)
                return pb.Ack(accepted=count)

        port = self._free_port()
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        done = asyncio.Event()

        async def serve() -> None:
            server = grpc.aio.server()
            pbg.add_EdgeServicer_to_server(Raw(), server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            ready.set()
            await done.wait()
            await server.stop(1)

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
        thread.start()
        ready.wait(30)
        try:
            return self._result("grpc.raw", self._load(port, n), "grpc.aio Publish appending to a list")
        finally:
            loop.call_soon_threadsafe(done.set)
            thread.join(10)
            loop.close()

    def byteor(self, n: int, workdir: Path, ack: str) -> Result:
        port = self._free_port()
        proc = self._load(port, n)
        run_byteor(f"grpc://127.0.0.1:{port}?ack={ack}", "file:/dev/null?format=len32", n, workdir)
        note = ("ack once committed (left egress, flushed)" if ack == "commit" else "ack once in the ring")
        return self._result("byteor.grpc" if ack == "commit" else "byteor.grpc.ack_ring", proc, note)


def grpc_rows(n: int, workdir: Path, rounds: int = 3) -> list[Result]:
    """The gRPC ingress rows, ``rounds`` runs of each taken in turn (a noisy machine moves every row
    alike within a round): the median rate with its range, and the median p50/p99 of a call. A row
    that cannot run here says why."""
    import statistics

    bench = Grpc()
    runs: dict[str, list[Result]] = {"grpc.raw": [], "byteor.grpc": [], "byteor.grpc.ack_ring": []}
    makers: dict[str, Callable[[], Result]] = {
        "grpc.raw": lambda: bench.raw(n), "byteor.grpc": lambda: bench.byteor(n, workdir, "commit"),
        "byteor.grpc.ack_ring": lambda: bench.byteor(n, workdir, "ring")}
    failed: dict[str, str] = {}
    for _ in range(rounds):
        for name, make in makers.items():
            if name in failed:
                continue
            try:
                runs[name].append(make())
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"[:160]
    rows: list[Result] = []
    for name, got in runs.items():
        if name in failed or not got:
            rows.append(Result.not_measured(name, failed.get(name, "no run")))
            continue
        rates = [r.msgs_per_s or 0.0 for r in got]
        rows.append(Result(name, msgs_per_s=statistics.median(rates), range=(min(rates), max(rates)),
                           p50_us=statistics.median(r.p50_us or 0.0 for r in got),
                           p99_us=statistics.median(r.p99_us or 0.0 for r in got),
                           note=f"{got[0].note}; median of {len(got)}",
                           extra={"clients": bench.clients, "per_call": bench.per_call,
                                  "per_message": bench.per_message}))
    return rows


# ==================================================================================================
# PostgreSQL and S3
# ==================================================================================================

PG_DSN = "postgresql://root@127.0.0.1:5432/test"
_STAGE_SQL = "CREATE TEMP TABLE IF NOT EXISTS raw_stage (id bytea, payload bytea) ON COMMIT DELETE ROWS"


class Postgres:
    """A queue table and an output table per row, on the local PostgreSQL."""

    def __init__(self) -> None:
        import psycopg

        self.psycopg = psycopg
        self.conn = psycopg.connect(PG_DSN, autocommit=True)
        self.tables: list[str] = []

    def _tables(self, n: int | None) -> tuple[str, str]:
        uid = uuid.uuid4().hex[:8]
        q, out = f"bench_q_{uid}", f"bench_out_{uid}"
        self.tables += [q, out]
        self.conn.execute(f"CREATE TABLE {q} (id bigserial PRIMARY KEY, payload bytea NOT NULL)")
        self.conn.execute(f"CREATE TABLE {out} (id bytea PRIMARY KEY, payload bytea NOT NULL)")
        if n:
            with self.conn.cursor() as cur, cur.copy(f"COPY {q} (payload) FROM STDIN") as copy:
                for m in _payloads(n):
                    copy.write_row((m,))
        return q, out

    def _copy_out(self, conn: Any, out: str, msgs: list[bytes]) -> None:
        """What the sink does per batch: COPY (SHA-256 id, payload) into a temp table, then insert
        what is new; one transaction."""
        import hashlib

        with conn.cursor() as cur:
            with cur.copy("COPY raw_stage (id, payload) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["bytea", "bytea"])
                for m in msgs:
                    copy.write_row((hashlib.sha256(m).digest(), m))
            cur.execute(f"INSERT INTO {out} SELECT id, payload FROM raw_stage ON CONFLICT (id) DO NOTHING")
        conn.commit()

    def copy_raw(self, n: int) -> float:
        """psycopg's COPY loop writing the same rows with the same guarantee, 5000 per transaction."""
        _, out = self._tables(None)
        msgs = _payloads(n)
        with self.psycopg.connect(PG_DSN) as conn:
            conn.execute(_STAGE_SQL)
            conn.commit()
            t0 = time.perf_counter()
            for i in range(0, n, 5000):
                self._copy_out(conn, out, msgs[i:i + 5000])
            return n / (time.perf_counter() - t0)

    def copy_byteor(self, n: int, workdir: Path) -> float:
        from byteor.edges import IterableSource

        _, out = self._tables(None)
        return run_byteor(IterableSource(_payloads(n)), f"{PG_DSN}?table={out}", n, workdir)

    def raw(self, n: int) -> float:
        """Queue to output table with the same guarantee: claim rows (FOR UPDATE SKIP LOCKED) in one
        transaction, write them in another, then delete them and commit the first."""
        q, out = self._tables(n)
        with self.psycopg.connect(PG_DSN) as claim, self.psycopg.connect(PG_DSN) as write:
            write.execute(_STAGE_SQL)
            write.commit()
            done = 0
            t0 = time.perf_counter()
            while done < n:
                rows = claim.execute(f"SELECT id, payload FROM {q} ORDER BY id LIMIT 2048 "
                                     "FOR UPDATE SKIP LOCKED").fetchall()
                self._copy_out(write, out, [r[1] for r in rows])
                claim.execute(f"DELETE FROM {q} WHERE id = ANY(%s)", ([r[0] for r in rows],))
                claim.commit()
                done += len(rows)
            return n / (time.perf_counter() - t0)

    def byteor(self, n: int, workdir: Path) -> float:
        q, out = self._tables(n)
        return run_byteor(f"{PG_DSN}?table={q}", f"{PG_DSN}?table={out}", n, workdir)

    def close(self) -> None:
        for t in self.tables:
            self.conn.execute(f"DROP TABLE IF EXISTS {t}")
        self.conn.close()


class S3:
    """moto's S3 server in its own process (in this one it would compete with the session for the
    GIL); input objects of 5000 lines."""

    PER_OBJECT = 5000

    def __init__(self) -> None:
        import socket

        import boto3

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                                      str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        for k, v in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):
            os.environ.setdefault(k, v)
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.s3.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.bucket = f"byteor-bench-{uuid.uuid4().hex[:8]}"
        self.s3.create_bucket(Bucket=self.bucket)

    def fill(self, n: int) -> str:
        prefix = f"{uuid.uuid4().hex[:8]}/"
        msgs = _payloads(n)
        for i in range(0, n, self.PER_OBJECT):
            self.s3.put_object(Bucket=self.bucket, Key=f"{prefix}in/{i:010d}",
                               Body=b"".join(m + b"\n" for m in msgs[i:i + self.PER_OBJECT]))
        return prefix

    def raw(self, n: int) -> float:
        """boto3: list, get each object, put its lines as one output object, then the checkpoint."""
        import json

        prefix = self.fill(n)
        s3, b = self.s3, self.bucket
        t0 = time.perf_counter()
        done = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b, Prefix=f"{prefix}in/"):
            for o in page.get("Contents", ()):
                lines = s3.get_object(Bucket=b, Key=o["Key"])["Body"].read().split(b"\n")[:-1]
                s3.put_object(Bucket=b, Key=f"{prefix}out/{done:020d}.lines", Body=b"".join(m + b"\n" for m in lines))
                done += len(lines)
                s3.put_object(Bucket=b, Key=f"{prefix}ck.json",
                              Body=json.dumps({"key": o["Key"], "offset": o["Size"]}).encode())
        return done / (time.perf_counter() - t0)

    def byteor(self, n: int, workdir: Path) -> float:
        prefix = self.fill(n)
        q = f"endpoint={self.endpoint}"
        return run_byteor(f"s3://{self.bucket}/{prefix}in/?{q}", f"s3://{self.bucket}/{prefix}out/?{q}", n, workdir)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def store_rows(row: Callable[[str, Callable[[], float], str], None], n: int, workdir: Path) -> None:
    """The PostgreSQL and S3 rows: each store's client loop and byteor, in this run."""
    pg: Postgres | None = None
    try:
        pg = Postgres()
        row("postgres.copy.raw", lambda: pg.copy_raw(n) if pg else 0.0, "psycopg COPY loop, same ids and guarantee")
        row("byteor.postgres.copy", lambda: pg.copy_byteor(n, workdir) if pg else 0.0,
            "memory -> identity -> postgresql:// sink")
        row("postgres.raw", lambda: pg.raw(n) if pg else 0.0, "SKIP LOCKED claim -> COPY -> delete, psycopg")
        row("byteor.postgres", lambda: pg.byteor(n, workdir) if pg else 0.0, "edgeplane queue table -> table")
    finally:
        if pg is not None:
            pg.close()
    s3: S3 | None = None
    try:
        s3 = S3()
        row("s3.raw", lambda: s3.raw(n) if s3 else 0.0, "boto3 get -> put -> checkpoint per object")
        row("byteor.s3", lambda: s3.byteor(n, workdir) if s3 else 0.0, "edgeplane prefix -> prefix (moto)")
    except Exception as exc:  # no moto here: say why instead of a figure
        for name in ("s3.raw", "byteor.s3"):
            row(name, lambda e=exc: _raise(e), "")  # type: ignore[misc]
    finally:
        if s3 is not None:
            s3.close()


def _raise(exc: BaseException) -> float:
    raise exc


# ==================================================================================================


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n")[0] if __doc__ else "adapters")
    p.add_argument("--only", metavar="GROUPS", default="",
                   help="comma-separated row groups to run: kafka,redis,nats,rabbitmq_stream,mqtt,grpc,store,web "
                        "(default: all)")
    args = p.parse_args(argv)
    only = {g.strip() for g in args.only.split(",") if g.strip()}

    def want(group: str) -> bool:
        return not only or group in only

    n = 4_000 if args.quick else 40_000
    os.environ.setdefault("BYTEOR_LOG_FORMAT", "text")
    results: list[Result] = []
    workdir = Path(tempfile.mkdtemp(prefix="byteor-bench-edge-"))
    sys.path.insert(0, str(workdir))

    def row(name: str, fn: Callable[[], float], note: str) -> None:
        try:
            rate = fn()
            results.append(Result(name, msgs_per_s=rate, note=note))
        except Exception as exc:  # a broker or peer that cannot run here: say why instead of a figure
            results.append(Result.not_measured(name, f"{type(exc).__name__}: {exc}"[:160]))

    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)  # the adapters' lifecycle lines and the clients' logs would drown the table
    try:
        if want("kafka"):
            kafka = Kafka()
            row("kafka.raw", lambda: kafka.raw(n), "confluent-kafka consume -> produce -> flush -> commit")
            row("byteor.kafka", lambda: kafka.byteor(n, workdir), "edgeplane identity pass-through")
            row("byteor.kafka.py_map", lambda: kafka.byteor(n, workdir, "py_map"), "py: map stage bytes.upper")
            row("kafka.quixstreams", lambda: kafka.peer("quixstreams", n, 240), "sdf.apply(bytes.upper), own process")
            row("kafka.bytewax", lambda: kafka.peer("bytewax", n, 240), "op.map(bytes.upper), own process")
        brokers = (("redis", Redis), ("nats", Nats), ("rabbitmq_stream", Rabbit), ("mqtt", Mqtt))
        for label, broker in ((label, make()) for label, make in brokers if want(label)):
            row(f"{label}.raw", lambda b=broker: b.raw(n), "client loop with the same guarantee")  # type: ignore[misc]
            row(f"byteor.{label}", lambda b=broker: b.byteor(n, workdir), "edgeplane identity pass-through")  # type: ignore[misc]
            close = getattr(broker, "close", None)
            if close is not None:
                close()
        if want("grpc"):
            results.extend(grpc_rows(n * 5, workdir, 1 if args.quick else 3))
        if want("store"):
            store_rows(row, n, workdir)
        if want("web"):
            try:
                results.extend(web_rows(args.quick, workdir))
            except Exception as exc:  # no aiohttp / uvicorn / websockets here: say why instead of a figure
                results.append(Result.not_measured("byteor.http", f"{type(exc).__name__}: {exc}"[:160]))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    by = {r.name: r.msgs_per_s for r in results}
    goals: dict[str, float | None] = {}
    for b in ("kafka", "redis", "nats", "rabbitmq_stream", "mqtt"):
        raw, ours = by.get(f"{b}.raw"), by.get(f"byteor.{b}")
        goals[f"byteor.{b} / {b}.raw (goal >= 0.80)"] = (ours / raw) if raw and ours else None
    raw, ours = by.get("grpc.raw"), by.get("byteor.grpc")
    goals["byteor.grpc / grpc.raw (goal >= 0.80)"] = (ours / raw) if raw and ours else None
    for ours_name, raw_name in (("byteor.postgres.copy", "postgres.copy.raw"), ("byteor.postgres", "postgres.raw"),
                                ("byteor.s3", "s3.raw")):
        raw, ours = by.get(raw_name), by.get(ours_name)
        goals[f"{ours_name} / {raw_name}"] = (ours / raw) if raw and ours else None
    for b in ("http", "ws"):
        raw, ours = by.get(f"{b}.raw"), by.get(f"byteor.{b}")
        goals[f"byteor.{b} / {b}.raw (goal >= 0.80)"] = (ours / raw) if raw and ours else None
    for peer in ("quixstreams", "bytewax"):
        ours, theirs = by.get("byteor.kafka.py_map"), by.get(f"kafka.{peer}")
        goals[f"byteor.kafka.py_map / kafka.{peer} (goal > 1)"] = (ours / theirs) if ours and theirs else None
    print_table(f"broker adapters ({n:,} messages of 60 bytes; msgs/s); HTTP: requests/s of one message and "
                "request latency; WebSocket: messages/s and send-to-ack latency", results,
                ratio_to=["kafka.raw", "kafka.quixstreams", "http.raw", "ws.raw"])
    for name, value in goals.items():
        print(f"{name}: {'not measured' if value is None else f'{value:.2f}'}")
    if args.json:
        write_json(args.json, results, extra={"goals": goals, "n": n})


if __name__ == "__main__":
    main()
