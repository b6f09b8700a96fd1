"""A receiver that never reads, in a room someone floods (SPEC §8, issue 6).

The server runs as its own process so its RSS can be watched with psutil: it
must stay bounded while the never-reader's share of the flood has nowhere to
go. The never-reader is dropped (1008 "slow consumer", counted in /metrics);
the flooding sender and a bystander keep working throughout.
"""

from __future__ import annotations

import asyncio

import psutil
import websockets
from websockets.asyncio.client import ClientConnection, connect

from support import Spawn
from support.rawws import RawClient, upgrade_request
from test_tls_metrics import http_get, samples
from wsplex.ws.close import CloseCode

ECHO = [websockets.Subprotocol("echo")]
MESSAGE = b"\xab" * (64 * 1024)
FLOOD = 600  # 600 x 64 KiB = 37.5 MiB for every echo client, the never-reader included
BATCH = 4  # the sender waits for both readers after each batch: they stay under the cap
CAP = 1024 * 1024


async def receive(ws: ClientConnection, count: int) -> int:
    received = 0
    for _ in range(count):
        received += len(await asyncio.wait_for(ws.recv(), 30))
    return received


async def metric(port: int, name: str) -> float:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return samples(body.decode())[(name, ())]


async def test_never_reader_is_dropped_and_memory_stays_bounded(
    spawn: Spawn,
) -> None:
    server = spawn("--protocols", "echo", "--max-send-buffer", str(CAP), "--max-message-size", "128k")
    rss = psutil.Process(server.proc.pid).memory_info
    never_reader = await RawClient.open(server.port)
    never_reader.send(upgrade_request(server.port, ["echo"]))
    assert (await never_reader.read_response()).status == 101
    url = server.url
    async with connect(url, subprotocols=ECHO, max_size=None) as sender, \
            connect(url, subprotocols=ECHO, max_size=None) as bystander:
        await sender.send("warm-up")
        assert await sender.recv() == "warm-up"
        assert await bystander.recv() == "warm-up"
        before = rss().rss

        sender_got = bystander_got = 0
        for _ in range(FLOOD // BATCH):
            for _ in range(BATCH):
                await sender.send(MESSAGE)
            got = await asyncio.gather(receive(sender, BATCH), receive(bystander, BATCH))
            sender_got += got[0]
            bystander_got += got[1]
        after = rss().rss
        assert sender_got == bystander_got == FLOOD * len(MESSAGE)
        assert await metric(server.port, "wsplex_slow_consumer_drops_total") == 1
        # Without the cap the never-reader's backlog alone would be ~37 MiB.
        assert after - before < 16 * 1024 * 1024, (before, after)

        await bystander.send("still here")
        assert await sender.recv() == "still here"
        assert await bystander.recv() == "still here"

    # The never-reader finally reads: the flood it could take, then the close.
    close = (await never_reader.recv_until_close())[1]
    assert close.close_code == CloseCode.POLICY_VIOLATION
    assert close.close_reason == "slow consumer"
    await never_reader.close()
    assert any("slow consumer" in line for line in server.lines) or server.read_until("slow consumer")
