#!/usr/bin/env python3
"""Soak test: many chat connections with churn for N minutes, server RSS over time.

Not part of the test run (it takes minutes and thousands of sockets). It starts
a wsplex server as a child process (or uses ``--url`` with ``--pid``), opens
``--connections`` chat clients spread over rooms, and for ``--minutes``:

* every second, ``--churn`` clients hang up and as many new ones connect;
* ``--rate`` chat messages per second are sent by random clients to their room;
* every ``--interval`` seconds a line reports open connections, traffic and the
  server's RSS.

Then traffic and churn stop, the clients stay connected while the server
settles, and the report compares RSS after the ramp-up with RSS at the end:
after the churn it should be back where it was (flat), not grown.

Clients are raw asyncio protocols that answer pings and count bytes, so one
client process can hold 10,000 connections. Each connection needs a file
descriptor on both sides; the script raises its soft ``RLIMIT_NOFILE`` to the
hard limit (the server child inherits it). If the hard limit is too low, raise
it first (see the README, "Limits and security")::

    python scripts/soak.py --connections 10000 --minutes 10
    python scripts/soak.py --connections 2000 --minutes 1 --churn 20 --rate 50
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

import psutil

PING, PONG, CLOSE = 0x9, 0xA, 0x8


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (RFC 6455 §5.2, masked as §5.3 requires)."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + body


@dataclass
class Totals:
    opened: int = 0
    closed: int = 0
    refused: int = 0
    sent: int = 0
    received_bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class ChatClient(asyncio.Protocol):
    """One chat connection: handshake, join a room, answer pings, count bytes."""

    def __init__(self, host: str, port: int, room: str, totals: Totals, ready: asyncio.Future[bool]) -> None:
        self.host, self.port, self.room, self.totals = host, port, room, totals
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: chat\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.totals.received_bytes += len(data)
        self.buffer += data
        if not self.upgraded:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.totals.refused += 1
                self.ready.set_result(False)
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded = self.open = True
            self.buffer = rest
            self.send(f"/join {self.room}")
            self.ready.set_result(True)
        self._frames()

    def _frames(self) -> None:
        """Skip data frames; answer pings (server frames are never masked)."""
        buf = self.buffer
        while len(buf) >= 2:
            opcode, size, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, offset = struct.unpack_from("!H", buf, 2)[0], 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, offset = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < offset + size:
                break
            payload = buf[offset:offset + size]
            buf = buf[offset + size:]
            if opcode == PING and self.transport is not None:
                self.transport.write(masked_frame(PONG, payload))
            elif opcode == CLOSE:
                self.totals.error(f"server closed {struct.unpack('!H', payload[:2])[0] if payload else ''}")
        self.buffer = buf

    def send(self, text: str) -> None:
        if self.open and self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(0x1, text.encode()))
            self.totals.sent += 1

    def hang_up(self) -> None:
        if self.open and self.transport is not None:
            self.open = False
            self.transport.write(masked_frame(CLOSE, struct.pack("!H", 1000)))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.totals.error("dropped by server")
        self.open = False
        self.totals.closed += 1
        if not self.ready.done():
            self.ready.set_result(False)


class Soak:
    def __init__(self, args: argparse.Namespace, host: str, port: int, server: psutil.Process) -> None:
        self.args, self.host, self.port, self.server = args, host, port, server
        self.totals = Totals()
        self.clients: list[ChatClient] = []
        self.started = time.monotonic()
        self.samples: list[float] = []  # RSS at each report during the traffic phase

    async def connect_one(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bool] = loop.create_future()
        room = f"room{random.randrange(self.args.rooms)}"
        try:
            _, client = await loop.create_connection(
                lambda: ChatClient(self.host, self.port, room, self.totals, ready), self.host, self.port
            )
            if await asyncio.wait_for(ready, 30):
                self.totals.opened += 1
                self.clients.append(client)
        except (OSError, TimeoutError) as exc:
            self.totals.error(type(exc).__name__)

    async def ramp_up(self) -> None:
        batch = 200
        for start in range(0, self.args.connections, batch):
            count = min(batch, self.args.connections - start)
            await asyncio.gather(*(self.connect_one() for _ in range(count)))

    def rss_mb(self) -> float:
        return float(self.server.memory_info().rss) / (1 << 20)

    def report(self, phase: str) -> float:
        rss = self.rss_mb()
        open_now = sum(1 for client in self.clients if client.open)
        print(f"{time.monotonic() - self.started:7.1f}s {phase:8} open={open_now:6d} "
              f"opened={self.totals.opened:6d} sent={self.totals.sent:8d} "
              f"received={self.totals.received_bytes / (1 << 20):8.1f}MiB server_rss={rss:7.1f}MiB",
              flush=True)
        return rss

    async def traffic(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        next_report = loop.time() + self.args.interval
        tick = 0
        while loop.time() < end:
            tick += 1
            await asyncio.sleep(1.0)
            self.churn()
            await asyncio.gather(*(self.connect_one() for _ in range(self.args.churn)))
            for client in random.sample(self.clients, min(self.args.rate, len(self.clients))):
                client.send(f"soak message {tick} from a client in {client.room}")
            if loop.time() >= next_report:
                next_report += self.args.interval
                self.samples.append(self.report("traffic"))

    def churn(self) -> None:
        random.shuffle(self.clients)
        leaving, self.clients = self.clients[:self.args.churn], self.clients[self.args.churn:]
        for client in leaving:
            client.hang_up()

    async def run(self) -> int:
        print(f"ramping up to {self.args.connections} connections on {self.host}:{self.port}", flush=True)
        idle = self.report("idle")
        await self.ramp_up()
        await asyncio.sleep(self.args.settle)
        after_ramp = self.report("ramped")
        await self.traffic(self.args.minutes * 60)
        peak = self.report("churned")
        await asyncio.sleep(self.args.settle)  # no traffic, no churn: let the server settle
        end = self.report("settled")
        for client in self.clients:
            client.hang_up()
        growth = end - after_ramp
        print(f"\nRSS: idle {idle:.1f} MiB, after ramp-up {after_ramp:.1f} MiB, "
              f"end of churn {peak:.1f} MiB, settled {end:.1f} MiB "
              f"({growth:+.1f} MiB, {100 * growth / after_ramp:+.1f}% since the ramp-up)")
        if len(self.samples) >= 4:
            # The first minutes warm up allocator pools and tables; a leak keeps growing after.
            half = self.samples[len(self.samples) // 2]
            print(f"RSS over the second half of the churn: {half:.1f} -> {end:.1f} MiB "
                  f"({end - half:+.1f} MiB)")
        print(f"connections opened {self.totals.opened}, refused {self.totals.refused}, "
              f"messages sent {self.totals.sent}, problems {self.totals.errors or 'none'}")
        return 0


def raise_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        print(f"warning: the open-files limit is {hard}, below the {needed} this run needs; "
              "raise it (ulimit -n, see README) or lower --connections", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, extra: list[str], log: list[str]) -> subprocess.Popen[bytes]:
    """Start wsplex; its warnings and errors are kept in ``log`` (the pipe is always drained)."""
    argv = [sys.executable, "-m", "wsplex", "--host", "127.0.0.1", "-p", str(port),
            "--max-connections-per-ip", "1000000", *extra]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"listening on" in line:
            threading.Thread(target=_keep_problems, args=(proc.stderr, log), daemon=True).start()
            return proc
    raise SystemExit(f"wsplex did not start: {proc.wait()}")


def _keep_problems(stream: IO[bytes], log: list[str]) -> None:
    for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if "WARNING" in line or "ERROR" in line or "Traceback" in line:
            log.append(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--churn", type=int, default=50, help="clients replaced per second")
    parser.add_argument("--rate", type=int, default=100, help="chat messages per second, in all")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between reports")
    parser.add_argument("--settle", type=float, default=5.0, help="quiet seconds before measuring")
    parser.add_argument("--url", help="ws://HOST:PORT/ of a running server (needs --pid)")
    parser.add_argument("--pid", type=int, help="that server's process id, for its RSS")
    parser.add_argument("--server-arg", action="append", default=[], help="extra wsplex flag")
    args = parser.parse_args()
    # Per process: a file per client here; the server, a child with the same limit, one per connection.
    raise_open_files_limit(args.connections + 2 * args.churn + 100)

    server_proc = None
    server_log: list[str] = []
    if args.url:
        if args.pid is None:
            parser.error("--url needs --pid, to watch the server's RSS")
        host_port = args.url.split("//", 1)[1].strip("/")
        host, _, port_text = host_port.rpartition(":")
        port, pid = int(port_text), args.pid
    else:
        host, port = "127.0.0.1", free_port()
        server_proc = start_server(port, args.server_arg, server_log)
        pid = server_proc.pid
    try:
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        return runner(Soak(args, host, port, psutil.Process(pid)).run())
    finally:
        if server_proc is not None:
            server_proc.send_signal(signal.SIGTERM)
            server_proc.wait(15)
            print(f"server warnings and errors: {len(server_log)}")
            for line in server_log[:10]:
                print("  " + line)


if __name__ == "__main__":
    sys.exit(main())
