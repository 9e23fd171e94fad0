"""gRPC endpoints: 20 000 messages through add_u8 from Publish to Subscribe; a SIGKILL of the
pipeline and a restart lose nothing that was acknowledged; output waits for a subscriber and is
shared by several; what a SubscribeAcked subscriber leaves unacknowledged goes to the next; bearer
tokens, oversized payloads and bad URIs are refused in one line."""

from __future__ import annotations

import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from broker_support import edge_spec, wait_out
from grpc_support import free_ports

grpc = pytest.importorskip("grpc")

N = 20_000
CAPACITY = 512
CALL = 1000  # messages per Publish call
TOKEN = "grpc-test-token-7f3a9c"


def _payloads(n: int = N) -> list[bytes]:
    return [b"m%05d" % i for i in range(n)]


def _bumped(messages: list[bytes]) -> set[bytes]:
    return {bytes(b + 1 for b in m) for m in messages}


def _calls(n: int = N) -> list[list[bytes]]:
    p = _payloads(n)
    return [p[i:i + CALL] for i in range(0, n, CALL)]


def test_every_message_passes_add_u8_from_publish_to_subscribe(edge, grpc_clients, tmp_path, ring_dir) -> None:
    publisher, subscriber = grpc_clients
    pin, pout = free_ports(2)
    e = edge(edge_spec(tmp_path, name="grpc"), f"--ingress=grpc://127.0.0.1:{pin}", f"--egress=grpc://127.0.0.1:{pout}",
             f"--ring-path={ring_dir}", f"--max-messages={N}", "--json")
    e.wait_for(f"listening on 127.0.0.1:{pin}")
    sub = subscriber(pout)
    pubs = [publisher(pin) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        acks = list(pool.map(lambda ic: pubs[ic[0] % 4].publish(ic[1]), enumerate(_calls())))
    assert acks == [CALL] * (N // CALL)  # every call acknowledged with its full count
    assert e.wait() == 0, e.stderr
    out = sub.collect(N)
    assert len(out) == N and set(out) == _bumped(_payloads()), f"{len(_bumped(_payloads()) - set(out))} lost"
    summary = e.summary()
    assert summary["messages_out"] == N and summary["stopped_by"] == "max-messages"
    source = summary["sources"][0]
    assert source["messages"] == N and source["acknowledged_calls"] == N // CALL and source["position"] == N


def test_sigkill_then_restart_loses_nothing_acknowledged(edge, grpc_clients, tmp_path, ring_dir) -> None:
    publisher, subscriber = grpc_clients
    pin, pout = free_ports(2)
    args = (edge_spec(tmp_path, name="grpc", pace_s=0.0001), f"--ingress=grpc://127.0.0.1:{pin}",
            f"--egress=grpc://127.0.0.1:{pout}", f"--ring-path={ring_dir}", "--json")
    first = edge(*args)
    first.wait_for(f"listening on 127.0.0.1:{pin}")
    sub = subscriber(pout, acked=True)  # at least once to the subscriber, across the kill too
    acked: list[bytes] = []
    pubs = [publisher(pin) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        failed = pool.map(lambda ic: pubs[ic[0] % 4].publish_until_acked(ic[1], acked), enumerate(_calls()))
        wait_out(ring_dir, 2000)
        acked_before_kill = list(acked)
        first.kill_group()
        second = edge(*args, "--idle-exit=5")
        failures = sum(failed)  # waits for every call to be acknowledged, by the second instance if need be
    assert failures >= 1, "the kill should have cut calls in flight"
    assert second.wait() == 0, second.stderr
    out = sub.collect(N)
    assert _bumped(acked_before_kill) <= set(out), "a message acknowledged before the kill was lost"
    missing = _bumped(_payloads()) - set(out)
    assert not missing, f"{len(missing)} lost"
    assert set(out) == _bumped(_payloads())
    # repeats come only from calls the kill cut (each repeated whole) and from the output in flight
    assert len(out) - len(Counter(out)) <= failures * CALL + CAPACITY


def test_output_waits_for_a_subscriber_and_is_shared_by_several_with_a_token(edge, grpc_clients, tmp_path,
                                                                             ring_dir) -> None:
    publisher, subscriber = grpc_clients
    pin, pout = free_ports(2)
    n = 2000
    e = edge(edge_spec(tmp_path, name="grpc"), f"--ingress=grpc://127.0.0.1:{pin}?token_env=GRPC_TOKEN",
             f"--egress=grpc://127.0.0.1:{pout}?token_env=GRPC_TOKEN&batch=16", f"--ring-path={ring_dir}",
             f"--max-messages={n}", "--json", env={"GRPC_TOKEN": TOKEN})
    e.wait_for(f"listening on 127.0.0.1:{pout}")
    e.wait_for(f"listening on 127.0.0.1:{pin}")
    pub = publisher(pin, TOKEN)
    for token in ("", "not-the-token"):
        with pytest.raises(grpc.RpcError) as refused:
            pub.publish([b"never"], token=token)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as oversize:
        pub.publish([b"x" * 65])
    assert oversize.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "larger than the ingress slot (64 bytes)" in oversize.value.details()
    stranger = subscriber(pout)  # no token: refused, receives nothing
    deadline = time.monotonic() + 30
    while not stranger.errors:
        assert time.monotonic() < deadline, "an unauthenticated Subscribe should be refused"
        time.sleep(0.05)
    assert stranger.errors == [grpc.StatusCode.UNAUTHENTICATED]
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(pub.publish, _payloads(n))
        time.sleep(1.0)
        assert not call.done(), "acknowledged before any subscriber took the output"
        subs = [subscriber(pout, TOKEN), subscriber(pout, TOKEN, acked=True)]
        assert call.result(60) == n
    assert e.wait() == 0, e.stderr
    got = [m for s in subs for m in s.collect(0, timeout=0)]
    assert sorted(got) == sorted(_bumped(_payloads(n))), "each message to exactly one subscriber"
    assert not stranger.received
    summary = e.summary()
    assert summary["sources"][0]["unauthenticated"] == 2 and summary["sources"][0]["rejected_calls"] == 1
    assert TOKEN not in e.stderr + e.stdout


def test_what_a_subscriber_leaves_unacknowledged_goes_to_the_next(edge, grpc_clients, tmp_path, ring_dir) -> None:
    publisher, subscriber = grpc_clients
    pin, pout = free_ports(2)
    n = 2000
    e = edge(edge_spec(tmp_path, name="grpc"), f"--ingress=grpc://127.0.0.1:{pin}", f"--egress=grpc://127.0.0.1:{pout}?batch=50",
             f"--ring-path={ring_dir}", f"--max-messages={n}", "--json")
    e.wait_for(f"listening on 127.0.0.1:{pin}")
    leaver = subscriber(pout, leave_after=100)  # SubscribeAcked, acknowledges nothing, then leaves
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(publisher(pin).publish, _payloads(n))
        assert leaver.left.wait(60), "the first subscriber should have received output"
        assert not call.done(), "acknowledged although the only subscriber acknowledged nothing"
        taker = subscriber(pout, acked=True)
        assert call.result(60) == n
    assert e.wait() == 0, e.stderr
    got = taker.collect(n)
    assert set(got) == _bumped(_payloads(n)), f"{len(_bumped(_payloads(n)) - set(got))} lost"
    assert len(leaver.received) >= 100 and set(leaver.received) <= set(got), "what the leaver saw came again"


def test_ack_ring_answers_while_the_messages_are_still_in_the_pipeline(edge, grpc_clients, tmp_path,
                                                                       ring_dir) -> None:
    publisher, _subscriber = grpc_clients
    pin = free_ports(1)[0]
    gate, out = tmp_path / "gate.open", tmp_path / "out.txt"
    (tmp_path / "gate_stage.py").write_text(  # holds every message until the test opens the gate
        f"import os, time\n\ndef gate(msg):\n    while not os.path.exists({str(gate)!r}):\n"
        "        time.sleep(0.01)\n    return msg\n\ngate.byteor_modifies = False\n")
    spec = tmp_path / "gated.kv"
    spec.write_text(edge_spec(tmp_path, name="grpc").read_text() + "pipeline.stages.1.id=gate\n"
                    "pipeline.stages.1.op=resolver\npipeline.stages.1.resolver_key=py:gate_stage:gate\npipeline.stages.1.depends_on.0=0\n")
    n = 300
    e = edge(spec, f"--ingress=grpc://127.0.0.1:{pin}?ack=ring", f"--egress=file:{out}?format=lines",
             f"--ring-path={ring_dir}", "--idle-exit=2", "--json")
    e.wait_for(f"listening on 127.0.0.1:{pin}")
    assert publisher(pin).publish(_payloads(n)) == n  # answered although nothing passed the gate yet
    assert not out.exists() or not out.read_bytes()
    gate.touch()
    assert e.wait() == 0, e.stderr
    assert sorted(out.read_bytes().splitlines()) == sorted(_bumped(_payloads(n)))


def test_a_second_signal_stops_at_once_while_output_waits_for_a_subscriber(edge, grpc_clients, tmp_path,
                                                                          ring_dir) -> None:
    publisher, _subscriber = grpc_clients
    pin, pout = free_ports(2)
    e = edge(edge_spec(tmp_path, name="grpc"), f"--ingress=grpc://127.0.0.1:{pin}", f"--egress=grpc://127.0.0.1:{pout}",
             f"--ring-path={ring_dir}")
    e.wait_for(f"listening on 127.0.0.1:{pin}")
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(publisher(pin).publish, _payloads(100))
        e.wait_for("no subscriber; holding 100 messages")
        e.proc.send_signal(signal.SIGINT)  # drains: waits for a subscriber like any flush
        time.sleep(0.5)
        assert e.proc.poll() is None
        e.proc.send_signal(signal.SIGINT)  # stops at once
        assert e.wait(30) == 130, e.stderr
        with pytest.raises(grpc.RpcError) as refused:
            call.result(30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # never acknowledged


@pytest.mark.parametrize(("flag", "uri", "needle"), [
    ("--ingress", "grpc://127.0.0.1:7001/edge", "grpc:// takes no path"),
    ("--ingress", "grpc://127.0.0.1:7001?ack=maybe", "?ack= must be one of commit|ring"),
    ("--ingress", "grpc://127.0.0.1:7001?colour=red", "unknown parameter 'colour'"),
    ("--ingress", "grpc://127.0.0.1:7001?token_env=BYTEOR_TEST_UNSET", "?token_env=BYTEOR_TEST_UNSET: the environment"),
    ("--ingress", "grpc://127.0.0.1:7001,127.0.0.1:7002", "grpc:// takes one HOST:PORT"),
    ("--ingress", "grpc://127.0.0.1:99999", "bad HOST:PORT"),
    ("--egress", "grpc://127.0.0.1:7001?batch=0", "?batch= must be an integer >= 1"),
    ("--egress", "grpc://127.0.0.1:7001?ack=ring", "unknown parameter 'ack'"),
])
def test_a_bad_grpc_uri_is_a_one_line_usage_error(cli, tmp_path, flag, uri, needle) -> None:
    other = "--egress=-" if flag == "--ingress" else "--ingress=-"
    proc = cli("run", edge_spec(tmp_path, name="grpc"), f"{flag}={uri}", other, script="byteor-edgeplane", input="",
               timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_port_in_use_fails_at_start_naming_the_address(cli, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = cli("run", edge_spec(tmp_path, name="grpc"), "--ingress=-", f"--egress=grpc://127.0.0.1:{port}?batch=8",
                   script="byteor-edgeplane", input="ab\n", timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_missing_grpc_client_names_the_extra() -> None:
    from byteor._errors import AdapterError
    from byteor.adapters._base import require

    with pytest.raises(AdapterError, match=r"grpcio client, which is not installed: pip install 'byteor\[grpc\]'"):
        require("no_such_grpc_module_zz", "grpc")
