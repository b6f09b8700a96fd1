"""The load generator: picows clients on uvloop, one process, one workload per run.

It is written to stay out of the way of the server it measures: picows parses
frames in C, each callback does a counter bump and, for a sample of receivers,
one slice and one ``int()`` for latency. It reports its own CPU so the reader
can tell whether it, and not the server, set the pace (near 100 % means it did;
the server-CPU-per-message figure stays meaningful either way).

The server's CPU time is read from its process (psutil, i.e. ``/proc``) at the
start and end of the measured window: user + system seconds divided by the
messages delivered in that window. Unlike wall time, that figure survives a
noisy, shared machine.

Workloads (``--workload``):

* ``echo``: N clients, each with W messages in flight; every message goes to
  every echo client, the sender included (wsplex's echo, SPEC §2; the minimal
  servers do the same). With one client that is a plain echo. Latency is the
  round trip of a client's own messages.
* ``chat``: one sender, R receivers in one room; the sender keeps at most W
  messages in flight per receiver (it sends message n+W only once every
  receiver has message n). Latency: send to receipt, sampled on every 32nd
  receiver.
* ``route``: P pairs of named peers (JSONsvc ``{"from":"a","to":"b"}>data``);
  ``a`` sends, the server routes to ``b``, ``b`` answers ``a`` the same way.
  A message is one routed delivery; latency is ``a``'s round trip.
* ``idle``: N connections that say nothing; the figure is the growth of the
  server's resident memory divided by N.

``--deflate`` makes every client offer permessage-deflate (RFC 7692) as a
browser does and inflate what comes compressed; ``--size`` pads chat lines to
that many bytes of text (compression needs realistic messages). Every run
reports the payload bytes on the wire per delivered message.

Targets (``--target``): ``wsplex`` (subprotocols ``echo``/``chat``/``JSONsvc``
on ``/``), ``plain`` (the minimal servers: paths ``/echo``, ``/chat``,
``/route``) and ``socketio`` (Engine.IO 4 over a WebSocket: ``42["chat",..]``).

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import psutil
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
BINARY = WSMsgType.BINARY
CLOSE = WSMsgType.CLOSE
now_ns = time.perf_counter_ns
#: What a browser offers (Chromium's exact header).
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
_TAIL = b"\x00\x00\xff\xff"
#: Payload bytes of data frames received, compressed or not (reset when measuring starts).
wire = [0]


def raise_fd_limit() -> None:
    """10,000 idle connections need 10,000 descriptors on each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def endpoint(
    target: str, base: str, workload: str, name: str, protocol: str | None = None
) -> tuple[str, dict[str, str]]:
    """The URL and extra headers a client of ``workload`` uses on ``target``."""
    if target == "socketio":
        return f"{base}/socket.io/?EIO=4&transport=websocket&name={name}", {}
    if target == "wsplex":
        protocol = protocol or {"echo": "echo", "idle": "echo", "chat": "chat", "route": "JSONsvc"}[workload]
        return f"{base}/?name={name}", {"Sec-WebSocket-Protocol": protocol}
    path = {"idle": "echo"}.get(workload, workload)
    return f"{base}/{path}?name={name}", {}


class Client(WSListener):  # type: ignore[misc]
    """One connection; ``on_text`` is swapped by the workload (warm-up, then measuring)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.transport: WSTransport | None = None
        self.on_text: Callable[[Client, bytes], None] = _ignore
        self.closed = asyncio.get_running_loop().create_future()
        self.ready = asyncio.get_running_loop().create_future()  # Socket.IO namespace joined
        self.count = 0
        #: Inflate compressed messages; a chat receiver that only counts does not (the CPU
        #: measured is the server's, and the load generator must keep up).
        self.inflate = True

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is TEXT or msg_type is BINARY:
            payload = frame.get_payload_as_bytes()
            wire[0] += len(payload)
            if frame.rsv1 and self.inflate:  # permessage-deflate, no context takeover: one inflater a message
                payload = zlib.decompressobj(-15).decompress(payload + _TAIL)
            self.on_text(self, payload)
        elif msg_type is CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(TEXT, data)


def _ignore(client: Client, data: bytes) -> None:
    pass


def masked_text(payload: bytes) -> bytes:
    """A client text frame with an all-zero mask key (RFC 6455 §5.3), so several can go
    out in one write; the server unmasks it like any other."""
    size = len(payload)
    if size < 126:
        return b"\x81" + bytes((0x80 | size,)) + b"\0\0\0\0" + payload
    return b"\x81\xfe" + size.to_bytes(2, "big") + b"\0\0\0\0" + payload


class Run:
    """Shared state of one workload: connections, server process, counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server = psutil.Process(args.server_pid)
        self.clients: list[Client] = []
        self.delivered = 0
        self.latencies: list[int] = []
        self.lost = 0

    async def connect(self, count: int, name: Callable[[int], str], offset: int = 0) -> list[Client]:
        args = self.args
        made: list[Client] = []

        async def one(i: int) -> None:
            url, headers = endpoint(args.target, args.url, args.workload, name(i), args.subprotocol)
            if args.deflate:
                headers = {**headers, "Sec-WebSocket-Extensions": DEFLATE_OFFER}
            client = Client(offset + i)
            if args.target == "socketio":
                client.on_text = sio_handshake
            await ws_connect(
                lambda: client, url, extra_headers=headers, read_buffer_init_size=1024,
                websocket_handshake_timeout=30, enable_auto_pong=True,
            )
            made.append(client)

        batch = 200
        for start in range(0, count, batch):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + batch))))
        made.sort(key=lambda c: c.index)
        if args.target == "socketio":
            await asyncio.gather(*(sio_open(c) for c in made))
        self.clients.extend(made)
        return made

    def server_cpu(self) -> float:
        times = self.server.cpu_times()
        return float(times.user + times.system)

    async def measure(self) -> dict[str, Any]:
        """Warm up, then count deliveries over ``--duration`` seconds."""
        args = self.args
        await asyncio.sleep(args.warmup)
        self.delivered = 0
        self.latencies = []
        wire[0] = 0
        cpu0, own0, t0 = self.server_cpu(), time.process_time(), time.perf_counter()
        await asyncio.sleep(args.duration)
        cpu1, own1, t1 = self.server_cpu(), time.process_time(), time.perf_counter()
        delivered = self.delivered
        wire_bytes = wire[0]
        wall = t1 - t0
        lat = sorted(self.latencies)
        return {
            "messages": delivered,
            "seconds": wall,
            "msgs_per_s": delivered / wall,
            "server_cpu_us_per_msg": (cpu1 - cpu0) * 1e6 / delivered if delivered else None,
            "server_cpu_pct": (cpu1 - cpu0) * 100 / wall,
            "loadgen_cpu_pct": (own1 - own0) * 100 / wall,
            "p50_us": lat[len(lat) // 2] / 1000 if lat else None,
            "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000 if lat else None,
            "lost_connections": sum(c.closed.done() for c in self.clients),
            "wire_bytes_per_msg": wire_bytes / delivered if delivered else None,
        }


def chat_text(size: int) -> bytes:
    """``size`` bytes of words, ending in a space: the line a chat client would send."""
    words = [b"the", b"meeting", b"moved", b"to", b"three", b"o'clock,", b"see", b"you", b"in",
             b"room", b"B;", b"bring", b"the", b"sensor", b"readings", b"and", b"coffee"]
    rng = random.Random(size)
    text = b""
    while len(text) < size:
        text += rng.choice(words) + b" "
    return text[:size - 1] + b" " if size else b""


# -- Socket.IO (Engine.IO 4) framing, just enough for a room broadcast ----------------


def sio_handshake(client: Client, data: bytes) -> None:
    """Engine.IO open packet ``0{...}`` in, namespace connect ``40`` out, ``40{...}`` in.

    Installed before the connection opens: the open packet can arrive with the 101.
    """
    if data[:1] == b"0":
        client.send(b"40")
    elif data[:2] == b"40" and not client.ready.done():
        client.ready.set_result(None)


async def sio_open(client: Client) -> None:
    await asyncio.wait_for(client.ready, 30)
    client.on_text = sio_pong(_ignore)


def sio_pong(inner: Callable[[Client, bytes], None]) -> Callable[[Client, bytes], None]:
    """Answer Engine.IO pings (``2`` -> ``3``); pass events on."""

    def on_text(c: Client, data: bytes) -> None:
        if data == b"2":
            c.send(b"3")
        else:
            inner(c, data)

    return on_text


# -- workloads ---------------------------------------------------------------------------


async def echo(run: Run) -> dict[str, Any]:
    args = run.args
    clients = await run.connect(args.clients, lambda i: f"e{i}")
    window = args.window

    def on_text(client: Client, data: bytes) -> None:
        run.delivered += 1
        sender, _, sent = data.partition(b" ")
        if int(sender) == client.index:
            run.latencies.append(now_ns() - int(sent))
            client.send(b"%d %d" % (client.index, now_ns()))

    for client in clients:
        client.on_text = on_text
    for client in clients:
        for _ in range(window):
            client.send(b"%d %d" % (client.index, now_ns()))
    return await run.measure()


async def chat(run: Run) -> dict[str, Any]:
    args = run.args
    sio = args.target == "socketio"
    receivers = await run.connect(args.clients, lambda i: f"r{i}")
    (sender,) = await run.connect(1, lambda i: "s", offset=len(receivers))
    total, window = len(receivers), args.window
    await _sync_room(sender, receivers, sio)

    ring = [0] * (window + 1)  # receipts of each in-flight message, by sequence number
    state = {"sent": 0, "oldest": 0, "queued": False}
    tail = -2 if sio else None  # '42["chat","[s] 123"]' ends in '"]'
    loop = asyncio.get_running_loop()
    out = sender.transport.underlying_transport  # type: ignore[union-attr]
    pad = chat_text(args.size)

    def send_window() -> None:
        """Refill the window in one write at the end of the loop turn, as a busy client would."""
        state["queued"] = False
        frames = []
        while state["sent"] - state["oldest"] < window:
            stamp = pad + b"%d" % now_ns()
            frames.append(masked_text(b'42["chat","' + stamp + b'"]' if sio else stamp))
            state["sent"] += 1
        if frames:
            out.write(b"".join(frames))

    def on_text(client: Client, data: bytes) -> None:
        run.delivered += 1
        seq = client.count
        client.count = seq + 1
        slot = seq % len(ring)
        ring[slot] += 1
        if client.index & 31 == 0:
            run.latencies.append(now_ns() - int(data[data.rfind(b" ") + 1 : tail]))
        if ring[slot] == total and seq == state["oldest"]:
            oldest = seq
            while ring[oldest % len(ring)] == total and oldest < state["sent"]:
                ring[oldest % len(ring)] = 0
                oldest += 1
            state["oldest"] = oldest
            if not state["queued"]:
                state["queued"] = True
                loop.call_soon(send_window)

    for client in receivers:
        client.on_text = sio_pong(on_text) if sio else on_text
        client.inflate = client.index & 31 == 0  # the ones that read the timestamp
    send_window()
    return await run.measure()


async def _sync_room(sender: Client, receivers: list[Client], sio: bool) -> None:
    """Wait until every receiver hears the sender, so join notices and history are past."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    waiting = {c.index for c in receivers}

    def on_text(client: Client, data: bytes) -> None:
        if b"sync" in data and client.index in waiting:
            waiting.discard(client.index)
            if not waiting and not done.done():
                done.set_result(None)

    for client in receivers:
        client.on_text = sio_pong(on_text) if sio else on_text
    deadline = loop.time() + 60
    while not done.done():
        sender.send(b'42["chat","sync"]' if sio else b"sync")
        await asyncio.wait([done], timeout=0.1)
        if loop.time() > deadline:
            raise SystemExit(f"loadgen: {len(waiting)} receivers never heard the sender")
    # The last sync messages may still be on their way: let them land.
    await asyncio.sleep(0.3)


async def route(run: Run) -> dict[str, Any]:
    args = run.args
    pairs = args.clients
    askers = await run.connect(pairs, lambda i: f"a{i}")
    answerers = await run.connect(pairs, lambda i: f"b{i}", offset=pairs)
    heads = {}
    for i in range(pairs):
        heads[askers[i].index] = b'{"from":"a%d","to":"b%d"}>' % (i, i)
        heads[answerers[i].index] = b'{"from":"b%d","to":"a%d"}>' % (i, i)
    for client in askers + answerers:
        client.send(heads[client.index][: heads[client.index].index(b',')] + b"}")  # register
    await _sync_pairs(askers, answerers, heads)
    window = args.window

    def answer(client: Client, data: bytes) -> None:
        if data.startswith(b'{"from":"a'):
            run.delivered += 1
            client.send(heads[client.index] + data[data.index(b">") + 1 :])

    def ask(client: Client, data: bytes) -> None:
        if data.startswith(b'{"from":"b'):
            run.delivered += 1
            run.latencies.append(now_ns() - int(data[data.index(b">") + 1 :]))
            client.send(heads[client.index] + b"%d" % now_ns())

    for client in answerers:
        client.on_text = answer
    for client in askers:
        client.on_text = ask
        for _ in range(window):
            client.send(heads[client.index] + b"%d" % now_ns())
    return await run.measure()


async def _sync_pairs(askers: list[Client], answerers: list[Client], heads: dict[int, bytes]) -> None:
    """Each ``a`` pings its ``b`` until the answer comes: both names are registered."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    waiting = {c.index for c in askers}

    def answer(client: Client, data: bytes) -> None:
        if data.startswith(b'{"from":"a'):
            client.send(heads[client.index] + b"0")

    def ask(client: Client, data: bytes) -> None:
        if data.startswith(b'{"from":"b'):
            waiting.discard(client.index)
            if not waiting and not done.done():
                done.set_result(None)

    for client in answerers:
        client.on_text = answer
    for client in askers:
        client.on_text = ask
    deadline = loop.time() + 30
    while not done.done():
        for client in askers:
            if client.index in waiting:
                client.send(heads[client.index] + b"0")
        await asyncio.wait([done], timeout=0.1)
        if loop.time() > deadline:
            raise SystemExit(f"loadgen: {len(waiting)} pairs never answered (is JSONsvc enabled?)")
    await asyncio.sleep(0.3)


async def idle(run: Run) -> dict[str, Any]:
    args = run.args
    await run.connect(1, lambda i: "warm")
    await asyncio.sleep(0.5)
    before = run.server.memory_info().rss
    clients = await run.connect(args.clients, lambda i: f"i{i}", offset=1)
    await asyncio.sleep(args.warmup + 1.0)
    after = run.server.memory_info().rss
    return {
        "connections": len(clients),
        "rss_before_mib": before / 2**20,
        "rss_after_mib": after / 2**20,
        "kib_per_conn": (after - before) / 1024 / len(clients),
        "lost_connections": sum(c.closed.done() for c in run.clients),
    }


WORKLOADS = {"echo": echo, "chat": chat, "route": route, "idle": idle}


async def main(args: argparse.Namespace) -> None:
    run = Run(args)
    result = await WORKLOADS[args.workload](run)
    result.update(workload=args.workload, target=args.target, clients=args.clients, window=args.window)
    for client in run.clients:
        if client.transport is not None:
            client.transport.disconnect()
    print(json.dumps(result), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port (no path)")
    parser.add_argument("--server-pid", type=int, required=True, help="process whose CPU and memory count")
    parser.add_argument("--target", choices=("wsplex", "plain", "socketio"), required=True)
    parser.add_argument("--workload", choices=tuple(WORKLOADS), required=True)
    parser.add_argument("--subprotocol", help="wsplex only: offer this protocol instead (profiling)")
    parser.add_argument("--clients", type=int, default=1, help="clients, receivers, pairs or connections")
    parser.add_argument("--window", type=int, default=1, help="messages in flight per client/receiver/pair")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate (RFC 7692)")
    parser.add_argument("--size", type=int, default=0, help="chat: pad each line to this many bytes")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise_fd_limit()
    uvloop.run(main(parse_args(sys.argv[1:])))
