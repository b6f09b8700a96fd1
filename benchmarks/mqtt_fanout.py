"""MQTT QoS 0 fan-out: wsplex's broker against Mosquitto.

    python benchmarks/mqtt_fanout.py [--receivers 200] [--messages 2000] [--rounds 3]

One publisher and ``--receivers`` subscribers of one topic, all MQTT 3.1.1 at
QoS 0. The publisher sends bursts of ``--window`` messages and waits until every
subscriber has the whole burst, so the figure is sustained fan-out, not queueing.
The servers run as processes of their own; the figure that matters is the
**server's CPU time per message delivered** (user + system, from psutil), next
to deliveries per second of wall time, which the load generator (Python, on
the same machine) bounds. Rounds are interleaved (wsplex, Mosquitto, wsplex...)
and the medians printed.

wsplex is reached over WebSocket (``ws://.../mqtt``, subprotocol ``mqtt``), as
its clients reach it. Mosquitto is reached over WebSocket when its build has a
working ``protocol websockets`` listener, else over plain TCP, and the output
says which: Debian's mosquitto 2.0.11 cannot open a websockets listener, and
plain TCP spares it the WebSocket framing wsplex pays for, so it flatters
Mosquitto.

The packets are built with wsplex's own codec (``wsplex.protocols.mqtt.codec``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from wsplex.protocols.mqtt.codec import (
    LEVEL_311,
    Connect,
    Publish,
    Splitter,
    Subscribe,
    SubscriptionRequest,
    Type,
    encode_connect,
    encode_publish,
    encode_subscribe,
)

TOPIC = "bench/fanout"
MQTT = [Subprotocol("mqtt")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # a benchmark driver polling a port, not a test
    raise SystemExit(f"nothing listens on {port}")


@contextmanager
def server(argv: list[str], port: int) -> Iterator[psutil.Process]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


class Link:
    """One MQTT connection: WebSocket or TCP; bytes out, packets in."""

    def __init__(self) -> None:
        self.splitter = Splitter()

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def read(self) -> bytes:
        raise NotImplementedError

    async def packets(self) -> list[tuple[int, bytes]]:
        while True:
            got = self.splitter.feed(await self.read())
            if got:
                return got

    async def close(self) -> None:
        raise NotImplementedError


class WebSocketLink(Link):
    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self.ws = ws

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def read(self) -> bytes:
        message = await self.ws.recv()
        assert isinstance(message, bytes)
        return message

    async def close(self) -> None:
        await self.ws.close()


class TcpLink(Link):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self) -> bytes:
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("closed")
        return data

    async def close(self) -> None:
        self.writer.close()


@dataclass
class Target:
    name: str
    argv: list[str]
    port: int
    websocket: bool

    async def open(self, client_id: str) -> Link:
        link: Link
        if self.websocket:
            ws = await connect(f"ws://127.0.0.1:{self.port}/mqtt", subprotocols=MQTT,
                               max_size=None, compression=None)
            link = WebSocketLink(ws)
        else:
            link = TcpLink(*await asyncio.open_connection("127.0.0.1", self.port))
        await link.send(encode_connect(Connect("MQTT", LEVEL_311, True, 0, client_id)))
        first, _ = (await link.packets())[0]
        assert first >> 4 == Type.CONNACK
        return link


async def receive(link: Link, counts: list[int], index: int, done: asyncio.Event, total: int) -> None:
    while counts[index] < total:
        for first, _ in await link.packets():
            if first >> 4 == Type.PUBLISH:
                counts[index] += 1
        done.set()


async def fan_out(target: Target, receivers: int, messages: int, window: int, size: int,
                  process: psutil.Process) -> dict[str, float]:
    links = [await target.open(f"r{n}") for n in range(receivers)]
    for link in links:
        await link.send(encode_subscribe(LEVEL_311, Subscribe(1, (SubscriptionRequest(TOPIC, 0),))))
        first, _ = (await link.packets())[0]
        assert first >> 4 == Type.SUBACK
    sender = await target.open("sender")
    counts = [0] * receivers
    progress = asyncio.Event()
    tasks = [asyncio.create_task(receive(link, counts, n, progress, messages))
             for n, link in enumerate(links)]
    packet = encode_publish(LEVEL_311, Publish(TOPIC, b"x" * size))
    before, started = process.cpu_times(), time.perf_counter()
    sent = 0
    while sent < messages:
        burst = min(window, messages - sent)
        await sender.send(packet * burst)  # several PUBLISH packets in one message
        sent += burst
        while min(counts) < sent:
            progress.clear()
            await progress.wait()
    elapsed, after = time.perf_counter() - started, process.cpu_times()
    await asyncio.gather(*tasks)
    for link in [*links, sender]:
        await link.close()
    deliveries = receivers * messages
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"server_us_per_delivery": round(cpu / deliveries * 1e6, 3),
            "deliveries_per_second": round(deliveries / elapsed)}


def mosquitto_target(config_dir: str) -> Target | None:
    binary = shutil.which("mosquitto")
    if binary is None:
        return None
    for websocket in (True, False):
        port = free_port()
        config = os.path.join(config_dir, f"mosquitto-{port}.conf")
        with open(config, "w") as fh:
            fh.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                     + ("protocol websockets\n" if websocket else "")
                     + "max_queued_messages 0\nmax_inflight_messages 0\n")
        argv = [binary, "-c", config]
        probe = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, probe, timeout=3)
        except SystemExit:
            continue
        finally:
            probe.terminate()
            probe.wait()
        return Target("mosquitto" + ("" if websocket else " (tcp)"), argv, port, websocket)
    return None


def benchmark_targets(config_dir: str) -> list[Target]:
    """wsplex (MQTT only, no compression, the rate limit out of the way), then
    Mosquitto when it is installed."""
    port = free_port()
    targets = [Target("wsplex", [sys.executable, "-m", "wsplex", "-p", str(port), "--protocols", "mqtt",
                                 "--no-compression", "--max-messages-per-second", "1000000"],
                      port, True)]
    mosquitto = mosquitto_target(config_dir)
    if mosquitto is not None:
        targets.append(mosquitto)
    return targets


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--window", type=int, default=16, help="messages per burst")
    parser.add_argument("--size", type=int, default=32, help="payload bytes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as config_dir:
        targets = benchmark_targets(config_dir)
        results: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
        for round_number in range(args.rounds):
            for target in targets:
                with server(target.argv, target.port) as process:
                    result = await fan_out(target, args.receivers, args.messages, args.window,
                                           args.size, process)
                print(json.dumps({"server": target.name, "round": round_number + 1, **result}), flush=True)
                results[target.name].append(result)
    for name, rounds in results.items():
        medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(json.dumps({"server": name, "median_of": len(rounds), **medians}))


if __name__ == "__main__":
    asyncio.run(main())
