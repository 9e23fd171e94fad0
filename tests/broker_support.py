"""Fixtures for the adapter tests: the real local brokers (Kafka through librdkafka's mock cluster,
owned by this test process), per-test names that are cleaned up, a TCP proxy that can cut
connections, and a running ``byteor-edgeplane`` in its own process group."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
BROKERS = ("kafka", "nats", "redis", "rabbitmq-stream", "mqtt")


# --------------------------------------------------------------------------------------------------
# Kafka: one in-process mock cluster per test session
# --------------------------------------------------------------------------------------------------



#: the environment of a run whose pace stage must not sleep (the restart after a kill)
PACE_OFF = {"EDGE_TEST_PACE_S": "0"}


def edge_spec(tmp_path: Path, *, name: str = "edge", pace_s: float = 0.0, capacity: int = 512,
              slot_bytes: int = 64) -> Path:
    """The adapter tests' pipeline: add_u8 over a SingleRing; with ``pace_s``, then a Python stage that
    sleeps that long per message, so a kill lands mid-run (a run with :data:`PACE_OFF` in its
    environment does not sleep)."""
    lines = [f"pipeline.name={name}", "pipeline.target=SingleRing", f"pipeline.ring.capacity={capacity}",
             f"pipeline.ring.slot_bytes={slot_bytes}", "pipeline.stages.0.id=bump", "pipeline.stages.0.op=add_u8"]
    if pace_s:
        (tmp_path / "pace_stage.py").write_text(
            "import os\nimport time\n\n"
            f"PACE = float(os.environ.get('EDGE_TEST_PACE_S', {str(pace_s)!r}))\n\n\n"
            "def pace(msg):\n    if PACE:\n        time.sleep(PACE)\n    return msg\n\n\n"
            "pace.byteor_modifies = False\n")
        lines += ["pipeline.stages.1.id=pace", "pipeline.stages.1.op=resolver",
                  "pipeline.stages.1.resolver_key=py:pace_stage:pace", "pipeline.stages.1.depends_on.0=0"]
    path = tmp_path / f"{name}.kv"
    path.write_text("\n".join(lines) + "\n")
    return path


def bump(m: bytes) -> bytes:
    """What add_u8 makes of ``m``."""
    return bytes(b + 1 for b in m)

@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    ck = pytest.importorskip("confluent_kafka")
    quiet = logging.getLogger("byteor.tests.kafka-mock")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    owner = ck.Producer({"test.mock.num.brokers": 1, "logger": quiet})
    brokers = owner.list_topics(timeout=10).brokers.values()
    yield ",".join(f"{b.host}:{b.port}" for b in brokers)
    owner.flush(5)
    del owner


def _quiet_kafka_logger() -> logging.Logger:
    log = logging.getLogger("byteor.tests.kafka")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


# --------------------------------------------------------------------------------------------------
# One broker's input and output, named per test
# --------------------------------------------------------------------------------------------------


class Broker:
    """Where a test's messages go in and come out, on one real broker."""

    name = ""

    def __init__(self, uid: str) -> None:
        self.uid = uid

    def ingress(self, *, host: str | None = None, **params: str) -> str:
        raise NotImplementedError

    def egress(self, **params: str) -> str:
        raise NotImplementedError

    def produce(self, payloads: list[bytes]) -> None:
        raise NotImplementedError

    def collect(self, want: int, timeout: float = 30.0) -> list[bytes]:
        """Everything in the output (at least ``want`` messages, or what came within ``timeout``)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    @staticmethod
    def _q(params: dict[str, str]) -> str:
        return ("?" + "&".join(f"{k}={v}" for k, v in params.items())) if params else ""


class KafkaBroker(Broker):
    name = "kafka"

    def __init__(self, uid: str, bootstrap: str) -> None:
        super().__init__(uid)
        self.bootstrap = bootstrap
        self.topic_in, self.topic_out, self.group = f"in-{uid}", f"out-{uid}", f"g-{uid}"
        self._seen: list[bytes] = []
        self._consumer: Any = None

    def ingress(self, *, host: str | None = None, **params: str) -> str:
        return f"kafka://{host or self.bootstrap}/{self.topic_in}" + self._q({"group": self.group, **params})

    def egress(self, **params: str) -> str:
        return f"kafka://{self.bootstrap}/{self.topic_out}" + self._q(params)

    def produce(self, payloads: list[bytes], **kw: Any) -> None:
        import confluent_kafka as ck

        p = ck.Producer({"bootstrap.servers": self.bootstrap, "logger": _quiet_kafka_logger(), "linger.ms": 5})
        for m in payloads:
            p.produce(self.topic_in, m, **kw)
        assert p.flush(30) == 0

    def records(self, want: int, timeout: float = 30.0) -> list[Any]:
        import confluent_kafka as ck

        if self._consumer is None:
            self._consumer = ck.Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"check-{self.uid}",
                                          "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                          "logger": _quiet_kafka_logger()})
            self._consumer.subscribe([self.topic_out])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        quiet_until = None
        while time.monotonic() < deadline:
            got = [m for m in self._consumer.consume(1000, 0.5) if m.error() is None]
            out += got
            if len(out) >= want:
                quiet_until = quiet_until or time.monotonic() + 1.0  # anything more (duplicates) comes too
                if time.monotonic() >= quiet_until:
                    break
        return out

    def collect(self, want: int, timeout: float = 30.0) -> list[bytes]:
        self._seen += [m.value() for m in self.records(want - len(self._seen), timeout)]
        return list(self._seen)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


class NatsBroker(Broker):
    name = "nats"

    def __init__(self, uid: str) -> None:
        super().__init__(uid)
        self.s_in, self.s_out = f"IN_{uid}", f"OUT_{uid}"
        self.subj_in, self.subj_out = f"in.{uid}", f"out.{uid}"
        self._run(self._setup())

    @staticmethod
    def _run(coro: Any) -> Any:
        return asyncio.run(coro)

    async def _setup(self) -> None:
        import nats
        from nats.js.api import StreamConfig

        nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=self.s_in, subjects=[self.subj_in]))
        await js.add_stream(StreamConfig(name=self.s_out, subjects=[self.subj_out]))
        await nc.close()

    def ingress(self, *, host: str | None = None, **params: str) -> str:
        q = {"stream": self.s_in, "durable": f"d{self.uid}", "ack_wait": "2", **params}
        return f"nats://{host or '127.0.0.1:4222'}/{self.subj_in}" + self._q(q)

    def egress(self, **params: str) -> str:
        return f"nats://127.0.0.1:4222/{self.subj_out}" + self._q({"stream": self.s_out, **params})

    def produce(self, payloads: list[bytes]) -> None:
        async def go() -> None:
            import nats

            nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2)
            js = nc.jetstream(publish_async_max_pending=10000)
            for m in payloads:
                await js.publish_async(self.subj_in, m)
            await asyncio.wait_for(js.publish_async_completed(), 30)
            await nc.close()

        self._run(go())

    def collect(self, want: int, timeout: float = 30.0) -> list[bytes]:
        async def go() -> list[bytes]:
            import nats

            nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2)
            js = nc.jetstream()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                info = await js.stream_info(self.s_out)
                if info.state.messages >= want:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            info = await js.stream_info(self.s_out)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(self.s_out, seq)
                out.append(msg.data or b"")
            await nc.close()
            return out

        return list(self._run(go()))

    def close(self) -> None:
        async def go() -> None:
            import nats

            nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2)
            js = nc.jetstream()
            for s in (self.s_in, self.s_out):
                with contextlib.suppress(Exception):
                    await js.delete_stream(s)
            await nc.close()

        self._run(go())


class RedisBroker(Broker):
    name = "redis"

    def __init__(self, uid: str) -> None:
        super().__init__(uid)
        import redis

        self.r = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
        self.k_in, self.k_out = f"byteor-t:{uid}:in", f"byteor-t:{uid}:out"

    def ingress(self, *, host: str | None = None, **params: str) -> str:
        q = {"group": "g", "consumer": "c1", **params}
        return f"redis://{host or '127.0.0.1:6379'}/{self.k_in}" + self._q(q)

    def egress(self, **params: str) -> str:
        return f"redis://127.0.0.1:6379/{self.k_out}" + self._q(params)

    def produce(self, payloads: list[bytes]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for m in payloads:
            pipe.xadd(self.k_in, {"data": m})
        pipe.execute()

    def collect(self, want: int, timeout: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.r.xlen(self.k_out) < want:
            time.sleep(0.2)
        time.sleep(0.5)
        return [fields[b"data"] for _id, fields in self.r.xrange(self.k_out)]

    def close(self) -> None:
        self.r.delete(self.k_in, self.k_out)
        self.r.close()


class RabbitBroker(Broker):
    name = "rabbitmq-stream"

    def __init__(self, uid: str) -> None:
        super().__init__(uid)
        self.s_in, self.s_out = f"byteor-t-{uid}-in", f"byteor-t-{uid}-out"

        async def go() -> None:
            from rstream import Producer

            p = Producer("127.0.0.1", 5552, username="guest", password="guest")
            await p.start()
            await p.create_stream(self.s_in, exists_ok=True)
            await p.create_stream(self.s_out, exists_ok=True)
            await p.close()

        asyncio.run(go())

    def ingress(self, *, host: str | None = None, **params: str) -> str:
        q = {"consumer": f"c{self.uid}", **params}
        return f"rabbitmq-stream://guest:guest@{host or '127.0.0.1:5552'}/{self.s_in}" + self._q(q)

    def egress(self, **params: str) -> str:
        return f"rabbitmq-stream://guest:guest@127.0.0.1:5552/{self.s_out}" + self._q(params)

    def produce(self, payloads: list[bytes]) -> None:
        async def go() -> None:
            from rstream import AMQPMessage, Producer

            p = Producer("127.0.0.1", 5552, username="guest", password="guest")
            await p.start()
            for i in range(0, len(payloads), 500):
                await p.send_batch(self.s_in, [AMQPMessage(body=m) for m in payloads[i:i + 500]])
            await asyncio.sleep(0.5)
            await p.close()

        asyncio.run(go())

    def collect(self, want: int, timeout: float = 30.0) -> list[bytes]:
        async def go() -> list[bytes]:
            from rstream import Consumer, ConsumerOffsetSpecification, OffsetType, amqp_decoder

            got: list[bytes] = []
            last = [time.monotonic()]

            async def cb(msg: Any, _ctx: Any) -> None:
                got.append(bytes(msg.body))
                last[0] = time.monotonic()

            c = Consumer("127.0.0.1", 5552, username="guest", password="guest")
            await c.start()
            await c.subscribe(self.s_out, cb, decoder=amqp_decoder,
                              offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not (len(got) >= want and time.monotonic() - last[0] > 1.0):
                await asyncio.sleep(0.1)
            await c.close()
            return got

        return list(asyncio.run(go()))

    def close(self) -> None:
        async def go() -> None:
            from rstream import Producer

            p = Producer("127.0.0.1", 5552, username="guest", password="guest")
            await p.start()
            for s in (self.s_in, self.s_out):
                with contextlib.suppress(Exception):
                    await p.delete_stream(s)
            await p.close()

        asyncio.run(go())


class MqttBroker(Broker):
    """MQTT keeps nothing for a topic nobody subscribed to: the collector subscribes at once, and
    a test starts the ingress (its persistent session) before it produces."""

    name = "mqtt"

    def __init__(self, uid: str) -> None:
        super().__init__(uid)
        import paho.mqtt.client as mqtt

        self.t_in, self.t_out = f"byteor-t/{uid}/in", f"byteor-t/{uid}/out"
        self._got: list[bytes] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        c = self._collector = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collect-{uid}",
                                          protocol=mqtt.MQTTv5)

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            with self._lock:
                self._got.append(msg.payload)

        c.on_message = on_message
        c.on_subscribe = lambda *_a: ready.set()
        c.on_connect = lambda cl, *_a: cl.subscribe(self.t_out, qos=1)
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = 65535  # else the broker queues at most 1000 beyond 20 in flight and drops the rest
        c.connect("127.0.0.1", 1883, properties=props)
        c.loop_start()
        assert ready.wait(10)

    def ingress(self, *, host: str | None = None, **params: str) -> str:
        q = {"qos": "1", "client_id": f"in-{self.uid}", **params}
        return f"mqtt://{host or '127.0.0.1:1883'}/{self.t_in}" + self._q(q)

    def egress(self, **params: str) -> str:
        return f"mqtt://127.0.0.1:1883/{self.t_out}" + self._q({"qos": "1", **params})

    def produce(self, payloads: list[bytes]) -> None:
        import paho.mqtt.client as mqtt

        p = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        p.max_inflight_messages_set(200)
        p.connect("127.0.0.1", 1883)
        p.loop_start()
        infos = [p.publish(self.t_in, m, qos=1) for m in payloads]
        for info in infos:
            info.wait_for_publish(30)
        p.disconnect()
        p.loop_stop()

    def collect(self, want: int, timeout: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self._got) < want:
            time.sleep(0.2)
        time.sleep(1.0)
        with self._lock:
            return list(self._got)

    def close(self) -> None:
        self._collector.disconnect()
        self._collector.loop_stop()


BrokerFactory = Callable[[str], Broker]


@pytest.fixture
def make_broker(request: pytest.FixtureRequest) -> Iterator[BrokerFactory]:
    """``make_broker("redis")``: a fresh input and output on that broker, removed after the test."""
    made: list[Broker] = []

    def make(name: str) -> Broker:
        uid = uuid.uuid4().hex[:10]
        if name == "kafka":
            b: Broker = KafkaBroker(uid, request.getfixturevalue("kafka_bootstrap"))
        elif name == "nats":
            b = NatsBroker(uid)
        elif name == "redis":
            b = RedisBroker(uid)
        elif name == "rabbitmq-stream":
            b = RabbitBroker(uid)
        elif name == "mqtt":
            b = MqttBroker(uid)
        else:
            raise ValueError(name)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


# --------------------------------------------------------------------------------------------------
# A TCP proxy the test can cut and restore
# --------------------------------------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a broker. :meth:`cut` closes every connection and refuses new
    ones until :meth:`restore`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listen.bind(("127.0.0.1", 0))
        self._listen.listen(64)
        self._listen.settimeout(0.1)
        self.port = self._listen.getsockname()[1]
        self._up = True
        self._stop = False
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listen.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(None)
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._up = False
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self._up = True

    def close(self) -> None:
        self._stop = True
        self.cut()
        self._listen.close()
        self._thread.join(2)


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[tuple[str, int]], TcpProxy]]:
    proxies: list[TcpProxy] = []

    def make(target: tuple[str, int]) -> TcpProxy:
        p = TcpProxy(target)
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.close()


# --------------------------------------------------------------------------------------------------
# byteor-edgeplane in its own process group
# --------------------------------------------------------------------------------------------------


class Edge:
    """A running ``byteor-edgeplane run``: its own process group, stderr in a file."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.err_path = workdir / f"edge-{uuid.uuid4().hex[:6]}.err"
        self.out_path = self.err_path.with_suffix(".out")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_") and k != "PYTHONPATH"}
        full_env.update(env or {})
        with open(self.err_path, "wb") as err, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen([str(BIN / "byteor-edgeplane"), "run", *args], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if self.proc.poll() is not None:
                raise AssertionError(f"edgeplane exited {self.proc.returncode} before {text!r}:\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{self.stderr}")
            time.sleep(0.05)

    def wait(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)

    def summary(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout))

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def kill_group(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Callable[..., Edge]]:
    """``edge(args...)`` starts ``byteor-edgeplane run args...``; whatever still runs is killed after the test."""
    started: list[Edge] = []

    def start(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Edge:
        e = Edge([str(a) for a in args], tmp_path, env)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


def session_state(ring_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((ring_dir / "session_state.json").read_text()))
    except (OSError, ValueError):
        return None


def wait_out(ring_dir: Path, at_least: int, timeout: float = 60.0) -> None:
    """Wait until the running pipeline's session state says ``at_least`` messages left egress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = session_state(ring_dir)
        if state and state.get("messages_out", 0) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} messages out within {timeout} s: {session_state(ring_dir)}")
