"""The byteor-edgeplane command line: URIs that do not parse or name an unknown scheme (exit 2), a
broker that cannot be reached (exit 1 with the address), bindings files, LaneGraph endpoints by
name, keys and headers, and credentials that never show."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from byteor._errors import AdapterError, UsageError
from byteor.adapters import open_sink, open_source, parse_uri, redact_uri
from byteor.adapters._base import require

CHAIN = "pipeline.name=edgecli\npipeline.target=SingleRing\npipeline.stages.0.id=bump\npipeline.stages.0.op=add_u8\n"


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    path = tmp_path / "chain.kv"
    path.write_text(CHAIN)
    return path


@pytest.mark.parametrize(("uri", "needle"), [
    ("amqp://h:1/q", "unknown scheme 'amqp'"),
    ("kafka://127.0.0.1:9092", "missing /TOPIC"),
    ("kafka://127.0.0.1:notaport/t?group=g", "bad HOST:PORT"),
    ("kafka://127.0.0.1:9092/t", "needs ?group="),
    ("kafka://127.0.0.1:9092/t?group=g&colour=red", "unknown parameter 'colour'"),
    ("redis://127.0.0.1:6379/s?group=g&retry_for=soon", "?retry_for= must be a number"),
    ("mqtt://127.0.0.1:1883/a/#", "%23"),
    ("mqtt://127.0.0.1:1883/a?qos=2", "?qos= must be one of 0|1"),
    ("nats://127.0.0.1:4222/subj?stream=S", "needs ?durable="),
    ("file:/tmp/x?format=csv", "format must be one of"),
    ("just-words", "not a URI"),
])
def test_a_bad_ingress_uri_is_a_usage_error(cli, chain, uri, needle) -> None:
    proc = cli("run", chain, f"--ingress={uri}", script="byteor-edgeplane", timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_unreachable_broker_fails_at_start_with_its_address(cli, chain) -> None:
    for uri in ("redis://127.0.0.1:1/s?group=g&connect_timeout=1", "nats://127.0.0.1:1/x?stream=S&durable=d&connect_timeout=1",
                "mqtt://127.0.0.1:1/t?connect_timeout=1",
                "rabbitmq-stream://127.0.0.1:1/s?consumer=c&connect_timeout=1",
                "kafka://127.0.0.1:1/t?group=g&connect_timeout=1"):
        proc = cli("run", chain, f"--ingress={uri}", "--egress=-", script="byteor-edgeplane", timeout=60)
        assert proc.returncode == 1, (uri, proc.stderr)
        assert "127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_file_and_dash_bindings_are_the_file_source_and_sink(cli, chain, tmp_path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"ab\ncd\n")
    out = tmp_path / "out.txt"
    proc = cli("run", chain, f"--ingress=file:{src}?format=lines", f"--egress=file:{out}?format=lines", "--sp",
               script="byteor-edgeplane")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b"bc\nde\n"
    proc = cli("run", chain, "--ingress=-", "--egress=-", "--sp", "--output=ascii", input="hi\n",
               script="byteor-edgeplane")
    assert proc.returncode == 0 and proc.stdout == "ij\n", proc.stderr


def test_lanegraph_endpoints_are_bound_by_name_and_by_bindings_file(cli, tmp_path) -> None:
    spec = tmp_path / "graph.kv"
    spec.write_text("\n".join([
        "pipeline.name=edgegraph", "pipeline.target=LaneGraph",
        "pipeline.lanes.0.name=a", "pipeline.lanes.0.kind=events", "pipeline.lanes.1.name=b",
        "pipeline.lanes.1.kind=events", "pipeline.endpoints.0.name=orders", "pipeline.endpoints.0.direction=ingress",
        "pipeline.endpoints.0.lane=a", "pipeline.endpoints.1.name=shipped", "pipeline.endpoints.1.direction=egress",
        "pipeline.endpoints.1.lane=b", "pipeline.roles.0.name=bump", "pipeline.roles.0.kind=stage",
        "pipeline.roles.0.op=add_u8", "pipeline.roles.0.inputs.0=a", "pipeline.roles.0.outputs.0=b"]) + "\n")
    (tmp_path / "in.txt").write_bytes(b"x\ny\n")
    out = tmp_path / "out.txt"
    proc = cli("run", spec, "--sp", f"--endpoint=orders=file:{tmp_path / 'in.txt'}",
               f"--endpoint=shipped=file:{out}?format=lines", script="byteor-edgeplane")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b"y\nz\n"
    bindings = tmp_path / "bindings.kv"
    bindings.write_text(f"# edge bindings\nendpoint.orders.uri=file:{tmp_path / 'in.txt'}\n"
                        f"endpoint.shipped.uri=file:{out}?format=hex\n")
    proc = cli("run", spec, "--sp", f"--bindings={bindings}", script="byteor-edgeplane")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "79\n7a\n"
    bindings.write_text("endpoint.orders=file:x\n")
    proc = cli("run", spec, "--sp", f"--bindings={bindings}", script="byteor-edgeplane")
    assert proc.returncode == 2 and "line 1" in proc.stderr and "endpoint.<name>.uri" in proc.stderr
    proc = cli("run", spec, "--sp", "--endpoint=nowhere=-", script="byteor-edgeplane")
    assert proc.returncode == 2 and "no endpoint named 'nowhere'" in proc.stderr


def test_run_of_the_other_products_has_no_bindings(cli, chain) -> None:
    proc = cli("run", chain, "--ingress=-", script="byteor")
    assert proc.returncode == 2 and "--ingress" in proc.stderr


def test_a_missing_client_names_the_extra_to_install() -> None:
    with pytest.raises(AdapterError, match=r"pip install 'byteor\[kafka\]'"):
        require("no_such_client_module_zz", "kafka")


def test_uris_lose_their_credentials_when_shown(monkeypatch) -> None:
    ep = parse_uri("rabbitmq-stream://bob:hunter2secret@127.0.0.1:5552/s?consumer=c")
    assert ep.username == "bob" and ep.password == "hunter2secret"
    assert "hunter2secret" not in ep.display and "bob" not in ep.display
    assert redact_uri("x kafka://u:p@h:1/t?group=g&token=abc y") == \
        "x kafka://<redacted>@h:1/t?group=g&token=<redacted> y"
    monkeypatch.setenv("BYTEOR_REDIS_PASSWORD", "envsecret99")
    ep = parse_uri("redis://127.0.0.1:6379/s?group=g")
    assert ep.password == "envsecret99" and "envsecret99" not in ep.scrub("auth envsecret99 failed")
    assert isinstance(open_source(parse_uri("file:/dev/null")), object)
    with pytest.raises(UsageError):
        open_sink("mqtt://127.0.0.1:1883/a/+")


@pytest.mark.services
def test_a_secret_in_a_uri_or_the_environment_shows_nowhere(cli, edge, tmp_path, ring_dir) -> None:
    import redis

    r = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
    user, secret, env_secret = f"byteor-t-{uuid.uuid4().hex[:8]}", f"Pw{uuid.uuid4().hex}", f"Ev{uuid.uuid4().hex}"
    stream = f"byteor-t:{uuid.uuid4().hex[:8]}"
    r.execute_command("ACL", "SETUSER", user, "on", f">{secret}", f">{env_secret}", "~*", "+@all")
    try:
        r.xadd(stream + ":in", {"data": b"hello"})
        spec = tmp_path / "chain.kv"
        spec.write_text(CHAIN)
        e = edge(spec, f"--ingress=redis://{user}:{secret}@127.0.0.1:6379/{stream}:in?group=g&consumer=c",
                 f"--egress=redis://{user}@127.0.0.1:6379/{stream}:out", f"--ring-path={ring_dir}", "--json",
                 env={"BYTEOR_REDIS_PASSWORD": env_secret, "BYTEOR_LOG_FORMAT": "json"})
        e.wait_for("ingress")
        deadline = time.monotonic() + 10
        while not (ring_dir / "session_state.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.2)
        snap = cli("snapshot", f"--ring-path={ring_dir}", "--json")
        snap_text = cli("snapshot", f"--ring-path={ring_dir}")
        bundle = tmp_path / "bundle"
        made = cli("incident-bundle", spec, f"--out={bundle}", f"--ring-path={ring_dir}", f"--pid={e.proc.pid}")
        assert made.returncode == 0, made.stderr
        e.proc.send_signal(signal.SIGTERM)  # stop it now that the evidence is taken (it drains first)
        assert e.wait() == 0, e.stderr
        assert r.xlen(stream + ":out") == 1
        bindings = json.loads((bundle / "session_state.json").read_text())
        assert [s["name"] for s in bindings["sources"]] == [f"redis://<redacted>@127.0.0.1:6379/{stream}:in?group=g&consumer=c"]
        seen = [e.stderr, e.stdout, snap.stdout, snap_text.stdout, made.stdout, made.stderr]
        seen += [p.read_text(errors="replace") for p in bundle.rglob("*") if p.is_file()]
        for text in seen:
            assert secret not in text and env_secret not in text
        # a wrong password: the error names the broker, never the password
        proc = cli("run", spec, f"--ingress=redis://{user}:wrong{secret}@127.0.0.1:6379/{stream}:in?group=g",
                   script="byteor-edgeplane")
        assert proc.returncode == 1 and "127.0.0.1:6379" in proc.stderr and secret not in proc.stderr, proc.stderr
    finally:
        r.execute_command("ACL", "DELUSER", user)
        r.delete(stream + ":in", stream + ":out")
        r.close()


@pytest.mark.services
def test_kafka_keys_and_headers_are_not_passed_on(make_broker, edge, tmp_path, ring_dir) -> None:
    broker = make_broker("kafka")
    spec = tmp_path / "chain.kv"
    spec.write_text(CHAIN)
    e = edge(spec, f"--ingress={broker.ingress()}", f"--egress={broker.egress(partition='0')}",
             f"--ring-path={ring_dir}", "--max-messages=50", "--json")
    e.wait_for("ingress")
    broker.produce([b"v%02d" % i for i in range(50)], key=b"k1", headers=[("h", b"1")])
    assert e.wait() == 0, e.stderr
    records = broker.records(50)
    assert sorted(m.value() for m in records) == sorted(bytes(b + 1 for b in b"v%02d" % i) for i in range(50))
    assert all(m.key() is None and not m.headers() and m.partition() == 0 for m in records)
    assert [m.value() for m in records] == [bytes(b + 1 for b in b"v%02d" % i) for i in range(50)], \
        "one key, one input partition, one output partition: order kept"
