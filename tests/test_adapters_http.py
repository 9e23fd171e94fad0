"""HTTP ingress and egress through ``byteor-edgeplane``: 20 000 messages through add_u8, a SIGKILL
of the whole process group and a restart lose no request that got ``202``, a full ring answers
``503`` + ``Retry-After`` and takes nothing, oversize / bad frame / bad token are refused and take
nothing, 100 concurrent clients for 10 s with bounded memory, and batched egress with retries
recognisable by their ``Idempotency-Key``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from broker_support import bump, edge_spec
from web_support import Sender, free_port, read_hex, rss_kib

N = 20_000
TOKEN = "s3cret-bearer-token-for-tests"


def _requests(n: int, per: int, tag: bytes = b"m") -> list[list[bytes]]:
    msgs = [tag + b"%05d" % i for i in range(n)]
    return [msgs[i:i + per] for i in range(0, n, per)]


def _start(edge, spec: Path, ring_dir: Path, out: Path, *extra: str, query: str = "", env=None):  # type: ignore[no-untyped-def]
    port = free_port()
    e = edge(spec, f"--ingress=http://127.0.0.1:{port}/ingest{query}", f"--egress=file:{out}?format=hex",
             f"--ring-path={ring_dir}", "--json", *extra, env=env)
    e.wait_for("listening")
    return e, f"http://127.0.0.1:{port}/ingest"


def test_http_ingress_passes_20000_messages_through_add_u8(edge, tmp_path, ring_dir) -> None:
    out = tmp_path / "out.hex"
    e, url = _start(edge, edge_spec(tmp_path, name="web"), ring_dir, out, f"--max-messages={N}")
    sender = Sender(url, _requests(N, 100), clients=8).run()
    assert e.wait() == 0, e.stderr
    assert sorted(sender.acked) == sorted(m for r in _requests(N, 100) for m in r)
    got = read_hex(out)
    assert Counter(got) == Counter(bump(m) for m in sender.acked)
    summary = e.summary()
    assert summary["messages_out"] == N and summary["stopped_by"] == "max-messages"


def test_sigkill_then_restart_loses_no_request_that_got_202(edge, tmp_path, ring_dir) -> None:
    spec = edge_spec(tmp_path, name="web", pace_s=0.0001)
    port = free_port()
    outs = [tmp_path / "out1.hex", tmp_path / "out2.hex"]
    requests = _requests(N, 50)
    args = [f"--ingress=http://127.0.0.1:{port}/ingest", f"--ring-path={ring_dir}", "--json"]
    first = edge(spec, *args, f"--egress=file:{outs[0]}?format=hex")
    first.wait_for("listening")
    sender = Sender(f"http://127.0.0.1:{port}/ingest", requests, clients=8).start()
    deadline = time.monotonic() + 60
    while len(sender.acked) < 3000:  # kill mid-run, with requests in flight
        assert time.monotonic() < deadline, (sender.status, first.stderr)
        time.sleep(0.02)
    first.kill_group()
    acked_before = len(sender.acked)
    second = edge(spec, *args, f"--egress=file:{outs[1]}?format=hex")
    sender.join()  # refused and unanswered requests are sent again to the restarted instance
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait() == 0, second.stderr
    got = Counter(read_hex(*outs))
    lost = [m for m in sender.acked if bump(m) not in got]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:3]}"
    assert acked_before < N and len(sender.acked) == N
    assert set(got) == {bump(m) for r in requests for m in r}


def test_full_ring_answers_503_with_retry_after_and_takes_nothing(edge, tmp_path, ring_dir) -> None:
    out = tmp_path / "out.hex"
    # a slow stage and a small ring: many clients fill it at once
    e, url = _start(edge, edge_spec(tmp_path, name="web", pace_s=0.002, capacity=16), ring_dir, out,
                    query="?retry_after=2")
    sender = Sender(url, _requests(600, 4), clients=32).run()
    e.proc.send_signal(signal.SIGTERM)
    assert e.wait() == 0, e.stderr
    assert sender.status.get(503, 0) > 0, sender.status
    assert sender.retry_after == {"2"}
    got = read_hex(out)
    # nothing refused entered: every message is in the output exactly once, and each was acknowledged
    assert Counter(got) == Counter(bump(m) for m in sender.acked)
    assert len(sender.acked) == 600


def test_oversize_bad_frames_and_bad_tokens_are_refused_and_take_nothing(edge, tmp_path, ring_dir) -> None:
    out = tmp_path / "out.hex"
    e, url = _start(edge, edge_spec(tmp_path, name="web"), ring_dir, out, query="?token_env=WEB_TOKEN&max_body=4096",
                    env={"WEB_TOKEN": TOKEN})
    good = {"authorization": f"Bearer {TOKEN}"}
    base = url.rsplit("/", 1)[0]
    with httpx.Client(timeout=10) as c:
        assert c.get(f"{base}/healthz").status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            r = c.post(url, content=b"x-no-token", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = c.post(url, content=b"y" * 65, headers=good)  # one message over the 64-byte slot
        assert r.status_code == 413 and len(r.text.splitlines()) == 1 and "slot" in r.text
        r = c.post(url, content=b"z" * 5000, headers=good)  # over max_body
        assert r.status_code == 413 and "limit" in r.text
        r = c.post(url, content=b"ok\n" + b"w" * 70 + b"\n", headers={**good, "content-type": "application/x-ndjson"})
        assert r.status_code == 413 and "line 2" in r.text
        bad = (3).to_bytes(4, "little") + b"abc" + (9).to_bytes(4, "little") + b"short"
        r = c.post(url, content=bad, headers={**good, "content-type": "application/x-byteor-len32"})
        assert r.status_code == 400 and "announces 9 bytes" in r.text
        assert c.post(url, content=b"t", headers={**good, "content-type": "text/plain"}).status_code == 415
        assert c.get(url, headers=good).status_code == 405
        assert c.post(f"{base}/other", content=b"o", headers=good).status_code == 404
        frames = b"".join(len(m).to_bytes(4, "little") + m for m in (b"len-a", b"len-b"))
        r = c.post(url, content=frames, headers={**good, "content-type": "application/x-byteor-len32"})
        assert r.status_code == 202, r.text
        assert c.post(url, content=b"one", headers=good).status_code == 202
    e.proc.send_signal(signal.SIGTERM)
    assert e.wait() == 0, e.stderr
    assert read_hex(out) == [bump(b"len-a"), bump(b"len-b"), bump(b"one")]
    assert TOKEN not in e.stderr + e.stdout


@pytest.mark.slow
def test_100_concurrent_clients_for_10_s_bounded_memory_nothing_lost(edge, tmp_path, ring_dir) -> None:
    out = tmp_path / "out.hex"
    e, url = _start(edge, edge_spec(tmp_path, name="web"), ring_dir, out)
    requests = _requests(400_000, 10)  # more than 10 s worth; what is not sent stays unsent
    sender = Sender(url, requests, clients=100).start()
    samples: list[int] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        time.sleep(0.5)
        samples.append(rss_kib(e.proc.pid))
    sender.stop()
    e.proc.send_signal(signal.SIGTERM)
    assert e.wait() == 0, e.stderr
    assert len(sender.acked) > 10_000, sender.status
    got = Counter(read_hex(out))
    assert all(got[bump(m)] == 1 for m in sender.acked), "an acknowledged message is missing or doubled"
    assert sum(got.values()) <= len(sender.acked) + 100 * 10  # at most the unanswered in-flight requests more
    settled = samples[len(samples) // 2:]
    assert max(settled) - min(settled) < 30 * 1024, f"RSS grows under steady load: {samples}"


def test_http_egress_posts_batches_retries_503_with_the_same_idempotency_key(edge, tmp_path, ring_dir,
                                                                              http_receiver) -> None:
    receiver = http_receiver(fail_first=2)
    inp = tmp_path / "in.txt"
    msgs = [b"e%05d" % i for i in range(N)]
    inp.write_bytes(b"".join(m + b"\n" for m in msgs))
    e = edge(edge_spec(tmp_path, name="web"), f"--ingress=file:{inp}?format=lines",
             f"--egress=http://bob:hunter2pass@127.0.0.1:{receiver.port}/sink?batch=500", f"--ring-path={ring_dir}",
             "--json")
    assert e.wait() == 0, e.stderr
    assert receiver.messages() == [bump(m) for m in msgs]
    assert {h["authorization"] for _, h in receiver.posts} == {"Basic " + base64.b64encode(b"bob:hunter2pass").decode()}
    assert "hunter2pass" not in e.stderr + e.stdout
    keys = [h["idempotency-key"] for _, h in receiver.posts]
    assert len(set(keys)) == len(keys)
    assert [h["idempotency-key"] for h in receiver.failed] == [keys[0], keys[0]]  # the retried batch
    body0 = receiver.posts[0][0]
    assert keys[0] == hashlib.sha256(b"0:%d\n" % body0.count(b"\n") + body0).hexdigest()[:40]
    assert all(body.count(b"\n") <= 500 for body, _ in receiver.posts)


def test_bad_http_bindings_are_usage_errors(cli, tmp_path) -> None:
    spec = edge_spec(tmp_path, name="web")
    assert "WEB_TOKEN" not in os.environ
    for uri, words in ((f"https://127.0.0.1:{free_port()}/x", "http:// only"),
                       (f"http://127.0.0.1:{free_port()}/x?token_env=WEB_TOKEN", "unset"),
                       (f"http://127.0.0.1:{free_port()}/x?max_body=-1", "max_body"),
                       (f"http://bob:hunter2pass@127.0.0.1:{free_port()}/x", "no user or password")):
        res = cli("run", spec, f"--ingress={uri}", script="byteor-edgeplane", timeout=60)
        assert res.returncode == 2, res.stderr
        assert words in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert "hunter2pass" not in res.stderr


@pytest.mark.services
def test_http_egress_sigkill_then_restart_loses_nothing(make_broker, edge, tmp_path, ring_dir,
                                                          http_receiver) -> None:
    broker = make_broker("redis")  # an ingress that keeps what was not committed
    receiver = http_receiver()
    spec = edge_spec(tmp_path, name="web", pace_s=0.0001)
    msgs = [b"k%05d" % i for i in range(N)]
    args = [f"--ingress={broker.ingress()}", f"--egress=http://127.0.0.1:{receiver.port}/sink?batch=200",
            f"--ring-path={ring_dir}", "--json"]
    first = edge(spec, *args)
    first.wait_for("ingress")
    broker.produce(msgs)
    deadline = time.monotonic() + 60
    while len(receiver.posts) < 15:
        assert time.monotonic() < deadline, first.stderr
        time.sleep(0.02)
    first.kill_group()
    second = edge(spec, *args, "--idle-exit=2")
    assert second.wait() == 0, second.stderr
    got = Counter(receiver.messages())
    assert set(got) == {bump(m) for m in msgs}, f"{len({bump(m) for m in msgs} - set(got))} lost"
    assert sum(got.values()) - len(got) <= 512 + 200  # repeats: at most what was in flight


def test_http_egress_len32_carries_newlines_that_ndjson_refuses(edge, tmp_path, ring_dir, http_receiver) -> None:
    receiver = http_receiver()
    inp = tmp_path / "in.hex"
    inp.write_text("41\n0941\n")  # add_u8 turns 0x09 into a newline
    url = f"http://127.0.0.1:{receiver.port}/sink"
    e = edge(edge_spec(tmp_path, name="web"), f"--ingress=file:{inp}?format=hex", f"--egress={url}?format=len32",
             f"--ring-path={ring_dir}", "--json")
    assert e.wait() == 0, e.stderr
    body, headers = receiver.posts[0]
    assert headers["content-type"] == "application/x-byteor-len32"
    assert body == b"\x01\x00\x00\x00B" + b"\x02\x00\x00\x00\nB"
    e = edge(edge_spec(tmp_path, name="web"), f"--ingress=file:{inp}?format=hex", f"--egress={url}",
             f"--ring-path={ring_dir}")
    assert e.wait() == 1
    assert "message 1 contains a newline" in e.stderr and "format=len32" in e.stderr and "Traceback" not in e.stderr


def test_server_intake_splits_large_requests_answers_in_order_and_refuses_when_full() -> None:
    from byteor.adapters._intake import Intake

    loop = asyncio.new_event_loop()
    try:
        answers: list[tuple[str, bool]] = []
        intake = Intake(loop, capacity=6)
        assert intake.offer([b"a1", b"a2", b"a3", b"a4"], lambda ok: answers.append(("a", ok)))
        assert intake.offer([b"b1"], lambda ok: answers.append(("b", ok)))
        assert not intake.offer([b"c1", b"c2"], lambda ok: answers.append(("c", ok)))  # 5 + 2 > 6: refused whole
        assert intake.take(3) == ([b"a1", b"a2", b"a3"], 3)  # a request larger than a batch is split
        intake.commit(3)
        loop.run_until_complete(asyncio.sleep(0))
        assert answers == []  # a's last message is not taken yet
        assert intake.take(10) == ([b"a4", b"b1"], 5)
        assert intake.offer([b"d1"], lambda ok: answers.append(("d", ok)))
        intake.commit(4)
        loop.run_until_complete(asyncio.sleep(0))
        assert answers == [("a", True)]
        intake.commit(5)
        intake.close()  # d was never taken: refused
        loop.run_until_complete(asyncio.sleep(0))
        assert answers == [("a", True), ("b", True), ("d", False)]
        assert not intake.offer([b"e1"], lambda ok: answers.append(("e", ok)))
    finally:
        loop.close()
