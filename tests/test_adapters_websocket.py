"""WebSocket ingress and egress through ``byteor-edgeplane``: 20 000 binary frames through add_u8,
acknowledged only after egress; a SIGKILL of the whole process group and a restart lose nothing
that was acknowledged; a bad token, a text frame and an oversized frame are refused and take
nothing; the egress client delivers 20 000 messages to a WebSocket server."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from broker_support import bump, edge_spec
from web_support import WsSender, free_port, read_hex

N = 20_000
TOKEN = "ws-bearer-token-for-tests"


def _msgs(n: int = N) -> list[bytes]:
    return [b"w%05d" % i for i in range(n)]


def test_websocket_ingress_passes_20000_messages_through_add_u8(edge, tmp_path, ring_dir) -> None:
    port, out = free_port(), tmp_path / "out.hex"
    e = edge(edge_spec(tmp_path, name="web"), f"--ingress=ws://127.0.0.1:{port}/feed",
             f"--egress=file:{out}?format=hex", f"--ring-path={ring_dir}", "--json", f"--max-messages={N}")
    e.wait_for("listening")
    sender = WsSender(f"ws://127.0.0.1:{port}/feed", _msgs(), connections=4).start()
    assert e.wait() == 0, e.stderr
    sender.join()
    assert Counter(read_hex(out)) == Counter(bump(m) for m in _msgs())
    assert sorted(sender.acked) == sorted(_msgs()), sender.errors  # every frame acknowledged, once it left egress
    assert e.summary()["stopped_by"] == "max-messages"


def test_sigkill_then_restart_loses_no_acknowledged_frame(edge, tmp_path, ring_dir) -> None:
    spec = edge_spec(tmp_path, name="web", pace_s=0.0001)
    port = free_port()
    outs = [tmp_path / "out1.hex", tmp_path / "out2.hex"]
    url = f"ws://127.0.0.1:{port}/feed"
    args = [f"--ingress={url}", f"--ring-path={ring_dir}", "--json"]
    first = edge(spec, *args, f"--egress=file:{outs[0]}?format=hex")
    first.wait_for("listening")
    sender = WsSender(url, _msgs(), connections=4, rate_pause=0.001).start()
    deadline = time.monotonic() + 60
    while len(read_hex(outs[0])) < 3000:
        assert time.monotonic() < deadline, first.stderr
        time.sleep(0.02)
    first.kill_group()
    sender.join()
    acked = set(sender.acked)
    assert 0 < len(acked) < N
    second = edge(spec, *args, f"--egress=file:{outs[1]}?format=hex")
    second.wait_for("listening")
    rest = [m for m in _msgs() if m not in acked]  # the client sends again what was not acknowledged
    again = WsSender(url, rest, connections=4).start()
    again.join()
    assert sorted(again.acked) == sorted(rest), again.errors
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait() == 0, second.stderr
    got = Counter(read_hex(*outs))
    lost = [m for m in acked if bump(m) not in got]
    assert not lost, f"{len(lost)} acknowledged frames lost, e.g. {lost[:3]}"
    assert set(got) == {bump(m) for m in _msgs()}


def test_bad_token_text_frames_and_oversize_frames_are_refused(edge, tmp_path, ring_dir) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    port, out = free_port(), tmp_path / "out.hex"
    e = edge(edge_spec(tmp_path, name="web"), f"--ingress=ws://127.0.0.1:{port}/feed?token_env=WS_TOKEN",
             f"--egress=file:{out}?format=hex", f"--ring-path={ring_dir}", "--json", env={"WS_TOKEN": TOKEN})
    e.wait_for("listening")
    url = f"ws://127.0.0.1:{port}/feed"
    good = {"Authorization": f"Bearer {TOKEN}"}

    async def closed_with(headers: dict[str, str], frame: bytes | str) -> int | None:
        async with connect(url, additional_headers=headers) as ws:
            await ws.send(frame)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    async def refused(headers: dict[str, str], path: str = "/feed") -> int:
        try:
            async with connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers):
                pass
        except InvalidStatus as exc:
            return int(exc.response.status_code)
        return 101

    async def good_frames() -> str:
        async with connect(url, additional_headers=good) as ws:
            await ws.send(b"fine-1")
            await ws.send(b"fine-2")
            return str(await asyncio.wait_for(ws.recv(), 20))

    async def main() -> None:
        assert await refused({}) == 401
        assert await refused({"Authorization": "Bearer nope"}) == 401
        assert await refused(good, "/elsewhere") == 404
        assert await closed_with(good, "text frame") == 1003
        assert await closed_with(good, b"x" * 65) == 1009  # over the 64-byte slot
        ack = await good_frames()
        assert ack in ('{"acked": 2}', '{"acked": 1}'), ack

    asyncio.run(main())
    e.proc.send_signal(signal.SIGTERM)
    assert e.wait() == 0, e.stderr
    assert read_hex(out) == [bump(b"fine-1"), bump(b"fine-2")]
    assert TOKEN not in e.stderr + e.stdout


def test_websocket_egress_sends_every_message_to_the_server(edge, tmp_path, ring_dir, ws_receiver) -> None:
    inp = tmp_path / "in.txt"
    msgs = _msgs()
    inp.write_bytes(b"".join(m + b"\n" for m in msgs))
    e = edge(edge_spec(tmp_path, name="web"), f"--ingress=file:{inp}?format=lines",
             f"--egress=ws://127.0.0.1:{ws_receiver.port}/out", f"--ring-path={ring_dir}", "--json")
    assert e.wait() == 0, e.stderr
    deadline = time.monotonic() + 10
    while len(ws_receiver.frames) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ws_receiver.frames == [bump(m) for m in msgs]
    assert ws_receiver.paths == {"/out"}


@pytest.mark.services
def test_websocket_egress_sigkill_then_restart_loses_nothing(make_broker, edge, tmp_path, ring_dir,
                                                               ws_receiver) -> None:
    broker = make_broker("redis")  # an ingress that keeps what was not committed
    spec = edge_spec(tmp_path, name="web", pace_s=0.0001)
    msgs = _msgs()
    args = [f"--ingress={broker.ingress()}", f"--egress=ws://127.0.0.1:{ws_receiver.port}/out",
            f"--ring-path={ring_dir}", "--json"]
    first = edge(spec, *args)
    first.wait_for("ingress")
    broker.produce(msgs)
    deadline = time.monotonic() + 60
    while len(ws_receiver.frames) < 3000:
        assert time.monotonic() < deadline, first.stderr
        time.sleep(0.02)
    first.kill_group()
    second = edge(spec, *args, "--idle-exit=2")
    assert second.wait() == 0, second.stderr
    got = Counter(ws_receiver.frames)
    assert set(got) == {bump(m) for m in msgs}, f"{len({bump(m) for m in msgs} - set(got))} lost"
    assert sum(got.values()) - len(got) <= 512 + 1024  # repeats: at most what was in flight
