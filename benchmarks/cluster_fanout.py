"""Chat fan-out across two wsplex nodes sharing Redis, against one node alone.

    python benchmarks/cluster_fanout.py [--receivers 200] [--messages 2000] [--redis URL]

One sender in room ``lobby`` on node one; the receivers are split evenly over
both nodes (``cluster``), or all on one node without Redis (``single``, the
baseline). The sender sends bursts of ``--window`` messages and waits until
every receiver has each burst, so the figure is sustained fan-out, not queueing.
Starts its own ``redis-server`` on a free port unless ``--redis`` is given.
Prints one JSON object per setup: deliveries per second and the latency
(send to receipt) median and 99th percentile in milliseconds.

It measures on whatever else the machine is doing: compare the two lines of
one run, not runs on different days.
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
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

CHAT = [Subprotocol("chat")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_line(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if text in line:
            return
    raise SystemExit(f"{proc.args[0]} exited before printing {text!r}")


@contextmanager
def process(argv: list[str], ready: str) -> Iterator[None]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_line(proc, ready)
        # Keep reading, or a chatty child blocks on a full pipe.
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
        yield
    finally:
        proc.terminate()
        proc.wait(15)


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    with process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                 "Ready to accept connections"):
        yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def wsplex_node(port: int, *args: str) -> Iterator[str]:
    argv = [sys.executable, "-m", "wsplex", "--host", "127.0.0.1", "-p", str(port),
            "--protocols", "chat", "--chat-history", "0", "--max-connections-per-ip", "100000", *args]
    with process(argv, "listening on"):
        yield f"ws://127.0.0.1:{port}/"


async def receive(ws: ClientConnection, count: int, latencies: list[float], got: list[int]) -> None:
    """Wait for ``count`` messages from the sender; notices (``* r7 joined``) are skipped."""
    while count:
        message = await ws.recv()
        assert isinstance(message, str)
        if message.startswith("[sender] "):
            latencies.append((time.perf_counter_ns() - int(message.split()[1])) / 1e6)
            got[0] += 1
            count -= 1


async def fan_out(urls: list[str], receivers: int, messages: int, window: int) -> dict[str, float]:
    sender = await connect(urls[0] + "?name=sender", subprotocols=CHAT, max_queue=None)
    clients = [await connect(urls[i % len(urls)] + f"?name=r{i}", subprotocols=CHAT, max_queue=None)
               for i in range(receivers)]
    for ws in clients:  # each is in the room before the clock starts
        await ws.send("/who")
        while not str(await ws.recv()).startswith("* in "):
            pass
    latencies: list[float] = []
    got = [0]
    started = time.perf_counter()
    for burst in range(0, messages, window):
        size = min(window, messages - burst)
        for _ in range(size):
            await sender.send(f"{time.perf_counter_ns()} x")
        await asyncio.gather(*(receive(ws, size, latencies, got) for ws in clients))
    elapsed = time.perf_counter() - started
    for ws in [sender, *clients]:
        await ws.close()
    latencies.sort()
    return {
        "deliveries_per_s": round(got[0] / elapsed),
        "latency_ms_p50": round(statistics.median(latencies), 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--window", type=int, default=20, help="messages in flight per burst")
    parser.add_argument("--redis", help="use this Redis instead of starting one")
    args = parser.parse_args()
    common = {"receivers": args.receivers, "messages": args.messages, "window": args.window}

    with wsplex_node(free_port()) as url:
        result = await fan_out([url], args.receivers, args.messages, args.window)
    print(json.dumps({"setup": "single", "nodes": 1, **common, **result}), flush=True)

    with redis_server(args.redis) as redis_url:
        env_args = ("--redis", redis_url)
        with wsplex_node(free_port(), *env_args) as one, wsplex_node(free_port(), *env_args) as two:
            result = await fan_out([one, two], args.receivers, args.messages, args.window)
    print(json.dumps({"setup": "cluster", "nodes": 2, **common, **result}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
