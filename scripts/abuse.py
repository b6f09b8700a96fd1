#!/usr/bin/env python3
"""Abuse run: the attacks of issue 17 against a wsplex server, with a bystander.

Not part of the test run (at full size it takes many minutes, gigabytes and
tens of thousands of sockets). For each attack it starts a fresh wsplex server
(pinned to core 0; the attacker and the bystander run on core 1, as
benchmarks/run.py does), connects a bystander -- two chat clients in a room of
their own, one saying a line, the other waiting for it, over and over -- and
then runs the attack from this process: raw WebSocket frames written over
asyncio sockets on uvloop after an ordinary handshake. Afterwards it prints what
the attacker got (close codes and reasons, HTTP statuses, error replies), the
server's RSS before, at its peak and after (VmRSS of /proc/PID/status), the
server's CPU seconds, the bystander's round trips (count, median, max) and
whether ``/healthz`` still answers 200; and the limit counters of ``/metrics``
that moved. At the end a Markdown table of every row (README, "Under attack").

    python scripts/abuse.py                       # every attack, the sizes of issue 17
    python scripts/abuse.py --scale 0.05          # a quick check, sizes 5 %
    python scripts/abuse.py --only 1,2,3b         # some attacks (a number takes all its parts)
    python scripts/abuse.py --redis --only 8,13   # on a private redis-server (the Redis attacks)
    flock /tmp/wsplex-heavy.lock python scripts/abuse.py --only 10   # full size, one at a time

The server runs with its default limits (``--server-arg`` adds flags). The
attackers connect from 127.0.0.2 and up (at most 5,000 connections per
address), the bystander from 127.0.0.1. This process raises its soft
open-files limit to the hard one; attack 9 starts its server with a lower
open-files limit (10,000 at full size) so that one attacker process can go past
it. Every loop here is bounded in time and count, and every address is on the
loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import IO, Any

SERVER_CORE, CLIENT_CORE = 0, 1
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KIB, MIB = 1 << 10, 1 << 20
EMPTY_PONGS = re.compile(rb"(?:\x8a\x00)+")  # a server's empty pongs, skipped in one step


# ---------------------------------------------------------------- frames

def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A client frame (RFC 6455 §5.2) with an all-zero masking key: the payload goes as it is."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    return header + b"\0\0\0\0" + payload


def text(line: str | bytes) -> bytes:
    return frame(TEXT, line.encode() if isinstance(line, str) else line)


def mqtt_packet(first: int, body: bytes) -> bytes:
    size, length = len(body), bytearray()
    while True:
        byte, size = size % 128, size // 128
        length.append(byte | (0x80 if size else 0))
        if not size:
            return bytes([first]) + bytes(length) + body


def mqtt_string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def mqtt_connect(client_id: str) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, keepalive 600 s, in one binary frame."""
    return frame(BINARY, mqtt_packet(0x10, b"\x00\x04MQTT\x04\x02\x02\x58" + mqtt_string(client_id)))


def mqtt_publish(topic: str, payload: bytes, *, retain: bool = True) -> bytes:
    return frame(BINARY, mqtt_packet(0x30 | (1 if retain else 0), mqtt_string(topic) + payload))


def jsonsvc(sender: str, payload: bytes | None = None, **header: Any) -> bytes:
    raw = json.dumps({"from": sender, **header}, separators=(",", ":")).encode()
    return text(raw if payload is None else raw + b">" + payload)


# ---------------------------------------------------------------- one connection

class Refused(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.outcome = f'HTTP {status} "{body.strip()[:80]}"' if body.strip() else f"HTTP {status}"


class Conn:
    """A WebSocket connection of raw frames; its outcome is how it ended (or "open")."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.outcome: str | None = None
        self.on_message: Callable[[int, bytes], None] | None = None
        self.frames = 0  # data frames received
        self.bytes = 0  # bytes received
        self.reading: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def end(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.done.set()

    def write(self, data: bytes) -> bool:
        if self.outcome is not None or self.writer.transport.is_closing():
            return False
        self.writer.write(data)
        return True

    async def send(self, data: bytes) -> bool:
        if not self.write(data):
            return False
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.end("reset while sending")
            return False
        return True

    def start_reading(self) -> None:
        if self.reading is None:
            self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        buf = bytearray()
        try:
            while True:
                data = await self.reader.read(1 << 18)
                if not data:
                    self.end("TCP closed, no close frame")
                    return
                self.bytes += len(data)
                buf += data
                pos, size = 0, len(buf)
                while True:
                    skip = EMPTY_PONGS.match(buf, pos)
                    if skip:
                        pos = skip.end()
                    if size - pos < 2:
                        break
                    length, offset = buf[pos + 1] & 0x7F, 2
                    if length == 126:
                        if size - pos < 4:
                            break
                        length, offset = struct.unpack_from("!H", buf, pos + 2)[0], 4
                    elif length == 127:
                        if size - pos < 10:
                            break
                        length, offset = struct.unpack_from("!Q", buf, pos + 2)[0], 10
                    if size - pos < offset + length:
                        break
                    opcode = buf[pos] & 0x0F
                    payload = bytes(buf[pos + offset:pos + offset + length])
                    pos += offset + length
                    if opcode == CLOSE:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                        reason = payload[2:].decode(errors="replace")
                        self.end(f'close {code} "{reason}"' if reason else f"close {code}")
                        self.writer.close()
                        return
                    if opcode == PING:
                        self.write(frame(PONG, payload))
                    elif opcode in (TEXT, BINARY, CONT):
                        self.frames += 1
                        if self.on_message is not None:
                            self.on_message(opcode, payload)
                del buf[:pos]
        except (ConnectionError, OSError):
            self.end("TCP reset")
        except asyncio.CancelledError:
            raise

    async def finish(self, timeout: float) -> str:
        """Read what the server sent (a never-reading client starts only now) until it ends, or "open"."""
        self.start_reading()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout)
        return self.outcome or "open"

    def abort(self) -> None:
        if self.reading is not None:
            self.reading.cancel()
        self.writer.transport.abort()


async def ws_connect(host: str, port: int, protocol: str | None, path: str = "/",
                     src: str | None = None, timeout: float = 30.0) -> Conn:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(src, 0) if src else None), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    offer = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                 f"{offer}\r\n".encode())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        writer.transport.abort()
        raise ConnectionResetError("closed during the handshake") from exc
    status = int(head.split(b" ", 2)[1])
    if status != 101:
        body = b""
        with contextlib.suppress(Exception):
            body = await asyncio.wait_for(reader.read(4096), 2)
        writer.transport.abort()
        raise Refused(status, body.decode(errors="replace"))
    return Conn(reader, writer)


async def http_get(host: str, port: int, path: str, timeout: float,
                   src: str | None = None) -> tuple[int, str]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(src, 0) if src else None), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(1 << 20), timeout)
        status_line, _, rest = data.partition(b"\r\n")
        body = rest.partition(b"\r\n\r\n")[2]
        return int(status_line.split(b" ", 2)[1]), body.decode(errors="replace")
    finally:
        writer.transport.abort()


def tally(outcomes: Iterable[str]) -> str:
    counts = Counter(outcomes)
    return "; ".join(f"{n} x {what}" for what, n in counts.most_common()) or "-"


def states(conns: Iterable[Conn]) -> str:
    return tally(c.outcome or "open" for c in conns)


# ---------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(core: int) -> None:
    if (os.cpu_count() or 1) > core and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {core})


class Server:
    """One wsplex process, started fresh for each attack; its log's warnings are kept."""

    source: str | None = None  # a folder holding the wsplex package to run instead of the installed one

    def __init__(self, extra: list[str], fd_limit: int | None) -> None:
        self.port = free_port()
        self.warnings: list[str] = []
        self.warning_count = 0
        argv = [sys.executable, "-m", "wsplex", "--host", "127.0.0.1", "-p", str(self.port), *extra]

        def prepare() -> None:
            pin(SERVER_CORE)
            if fd_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))
        env = dict(os.environ)
        if Server.source:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [Server.source, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=prepare, env=env)
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            if b"listening on" in raw:
                threading.Thread(target=self._log, args=(self.proc.stderr,), daemon=True).start()
                return
            self._note(raw)
        raise SystemExit(f"wsplex did not start (exit {self.proc.wait()}): {self.warnings}")

    def _note(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip()
        if "WARNING" in line or "ERROR" in line or "Traceback" in line or "Error" in line:
            self.warning_count += 1
            if len(self.warnings) < 200:
                self.warnings.append(line)

    def _log(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._note(raw)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mib(self) -> float:
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class RssSampler(threading.Thread):
    """The server's VmRSS every 50 ms, in a thread so a busy attacker loop does not skip samples."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self.running = server, server.rss_mib(), True
        self.samples: list[tuple[float, float]] = []

    def run(self) -> None:
        while self.running:
            rss = self.server.rss_mib()
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic(), rss))
            time.sleep(0.05)


class Redis:
    """A private redis-server on a free port, without persistence."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("--redis needs redis-server on the PATH")
        self.port = free_port()
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def metrics_totals(text_format: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in text_format.splitlines():
        if line.startswith("#") or "_total" not in line:
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("wsplex_") and not name.startswith("wsplex_messages") \
                and "bytes" not in name and "accepted" not in name:
            with contextlib.suppress(ValueError):
                totals[name.replace("wsplex_", "").replace("_total", "")] = float(value)
    return totals


# ---------------------------------------------------------------- the bystander (its own process)

def bystander_main(host: str, port: int, stop: Any, pipe: Pipe) -> None:
    pin(CLIENT_CORE)
    try:
        import uvloop
        uvloop.run(bystander(host, port, stop, pipe))
    except ImportError:
        asyncio.run(bystander(host, port, stop, pipe))


async def bystander(host: str, port: int, stop: Any, pipe: Pipe) -> None:
    """Two chat clients in a room of their own: A says "rt N", B waits for it; each round trip timed."""
    trips: list[tuple[float, float]] = []  # (monotonic start, seconds)
    pending: tuple[float, float] | None = None
    problem = ""
    me = f"by{os.getpid()}"
    try:
        heard: asyncio.Queue[str] = asyncio.Queue()
        a = await ws_connect(host, port, "chat", f"/?name={me}a", src="127.0.0.1")
        b = await ws_connect(host, port, "chat", f"/?name={me}b", src="127.0.0.1")
        b.on_message = lambda _op, payload: heard.put_nowait(payload.decode(errors="replace"))
        a.start_reading()
        b.start_reading()
        room = f"bystanders{os.getpid()}"

        async def hear(wanted: str, limit: float) -> bool:
            loop = asyncio.get_running_loop()
            end = loop.time() + limit
            while loop.time() < end and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    if (await asyncio.wait_for(heard.get(), 0.1)) == wanted:
                        return True
                if b.ended:
                    raise ConnectionError(f"bystander's connection ended: {b.outcome}")
            return False
        await b.send(text(f"/join {room}"))
        await hear(f"* {me}b joined", 30)
        await a.send(text(f"/join {room}"))
        await hear(f"* {me}a joined", 30)
        pipe.send("ready")
        n = 0
        while not stop.is_set():
            n += 1
            start = time.monotonic()
            await a.send(text(f"rt {n}"))
            if await hear(f"[{me}a] rt {n}", 3600):
                trips.append((start, time.monotonic() - start))
                await asyncio.sleep(0.02)
            else:
                pending = (start, time.monotonic() - start)
            if a.ended:
                raise ConnectionError(f"bystander's connection ended: {a.outcome}")
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            pipe.send("ready")
        while not stop.is_set():
            await asyncio.sleep(0.1)
    pipe.send({"trips": trips, "pending": pending, "problem": problem})


# ---------------------------------------------------------------- attacks

@dataclass
class Result:
    attack: str
    title: str
    got: str = ""
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    cpu: float = 0.0
    trips: int = 0
    median_ms: float = 0.0
    max_ms: float = 0.0
    max_unfinished: bool = False
    bystander_problem: str = ""
    healthy: str = ""
    counters: dict[str, float] = field(default_factory=dict)
    warnings: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Ctx:
    """What an attack gets: sizes scaled, connections kept for the clean-up, the measuring mark."""

    def __init__(self, host: str, port: int, scale: float, server: Server, redis: Redis | None) -> None:
        self.host, self.port, self.scale, self.server, self.redis = host, port, scale, server, redis
        self.conns: list[Conn] = []
        self.notes: list[str] = []
        self.marked: Callable[[], None] = lambda: None
        self._sources = 0

    def n(self, count: float, minimum: int = 1) -> int:
        return max(minimum, int(count * self.scale))

    def secs(self, seconds: float, minimum: float = 2.0) -> float:
        return max(minimum, seconds * self.scale)

    def note(self, line: str) -> None:
        self.notes.append(line)
        print(f"    {line}", flush=True)

    def mark(self) -> None:
        """The attack proper starts now: RSS, CPU and the bystander are measured from here."""
        self.marked()

    def source(self) -> str:
        """Attackers' addresses: 127.0.0.2 and up, 5,000 connections each."""
        self._sources += 1
        return f"127.0.0.{2 + (self._sources - 1) // 5000}"

    async def connect(self, protocol: str | None, path: str = "/", *, read: bool = True,
                      src: str | None = None) -> Conn:
        conn = await ws_connect(self.host, self.port, protocol, path, src or self.source())
        self.conns.append(conn)
        if read:
            conn.start_reading()
        return conn

    async def connect_many(self, count: int, protocol: str | None, path: Callable[[int], str] | str = "/",
                           *, read: bool = True, parallel: int = 200,
                           first: Callable[[int], bytes] | None = None) -> tuple[list[Conn], Counter[str]]:
        """count connections, parallel at a time; first(i) is written as soon as one is upgraded."""
        gate = asyncio.Semaphore(parallel)
        failures: Counter[str] = Counter()
        conns: list[Conn] = []

        async def one(i: int) -> None:
            async with gate:
                try:
                    conn = await self.connect(protocol, path(i) if callable(path) else path, read=read)
                    if first is not None:
                        conn.write(first(i))
                    conns.append(conn)
                except Refused as exc:
                    failures[exc.outcome] += 1
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    failures[f"connect failed: {type(exc).__name__}"] += 1
        await asyncio.gather(*(one(i) for i in range(count)))
        return conns, failures


async def drained(conn: Conn, end: float) -> bool:
    """Wait for what was written to leave, until loop time ``end``: False when it did not
    (the server stopped reading, or reset the connection, which ``conn`` is told)."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(conn.writer.drain(), max(0.01, end - loop.time()))
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        conn.end("reset while sending")
        return False
    return True


async def pace(conn: Conn, unit: bytes, per_tick: int, tick: float, seconds: float) -> int:
    """Write per_tick copies of unit every tick seconds for seconds; when late, never catch up."""
    loop = asyncio.get_running_loop()
    batch, sent, end = unit * per_tick, 0, loop.time() + seconds
    due = loop.time()
    while loop.time() < end and conn.write(batch):
        sent += per_tick
        if not await drained(conn, end):
            break
        due += tick
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            due = loop.time()
    return sent


async def flood(conn: Conn, chunk: bytes, seconds: float) -> int:
    """Write chunk after chunk as fast as the socket takes them, for seconds or until the server closes."""
    loop = asyncio.get_running_loop()
    end, chunks = loop.time() + seconds, 0
    while loop.time() < end and conn.write(chunk):
        chunks += 1
        if not await drained(conn, end):
            break
    return chunks


async def finish_all(conns: list[Conn], timeout: float) -> str:
    return tally(await asyncio.gather(*(c.finish(timeout) for c in conns)))


def replies_sample(conn: Conn, errors: Counter[str], marker: Callable[[str], bool]) -> None:
    def seen(_op: int, payload: bytes) -> None:
        line = payload[:200].decode(errors="replace")
        if marker(line):
            errors[re.sub(r"\d+", "N", line[:120])] += 1
    conn.on_message = seen


def error_summary(errors: Counter[str]) -> str:
    """The commonest replies, each cut to its first 90 characters."""
    return "; ".join(f"{n:,} x {what[:90]!r}" for what, n in errors.most_common(2))


# 1
async def a1a(x: Ctx) -> str:
    conn = await x.connect("echo")
    start = time.monotonic()
    conn.write(frame(TEXT, b"", fin=False))
    chunk = frame(CONT, b"", fin=False) * 10_000
    chunks = await flood(conn, chunk, x.secs(65))
    outcome = await conn.finish(5)
    return f"{outcome} after {chunks * 10_000:,} frames written in {time.monotonic() - start:.1f} s"


async def a1b(x: Ctx) -> str:
    """Messages of 4,000 empty fragments each, back to back: under --max-fragments, over the rate."""
    conn = await x.connect("echo")
    message = frame(TEXT, b"", fin=False) + frame(CONT, b"", fin=False) * 3998 + frame(CONT, b"")
    chunks = await flood(conn, message, x.secs(65))
    return f"{await conn.finish(5)} after {chunks * 4000:,} frames written"


# 2
async def hold_fragments(x: Ctx, count: int, fragment: int, total: int, hold: float) -> str:
    conns, failures = await x.connect_many(count, "echo")
    piece = b"ab" * (fragment // 2)
    frames = total // fragment

    async def one(conn: Conn) -> None:
        conn.write(frame(TEXT, piece, fin=False))
        chunk = frame(CONT, piece, fin=False) * min(frames - 1, 8192)
        sent = 1
        while sent < frames and not conn.ended:
            batch = min(frames - sent, 8192)
            if not await conn.send(chunk if batch == 8192 else frame(CONT, piece, fin=False) * batch):
                break
            sent += batch
    await asyncio.gather(*(one(c) for c in conns))
    await asyncio.sleep(hold)  # every message unfinished, held
    closed = [c.outcome or "" for c in conns if c.ended]
    return (f"{count} x {frames:,} fragments of {fragment} B held {hold:.0f} s: "
            f"{tally(closed) if closed else 'none closed'}; {len(conns) - len(closed)} open"
            + (f"; {tally(failures.elements())}" if failures else ""))


async def a2a(x: Ctx) -> str:
    return await hold_fragments(x, x.n(10), 2, MIB, x.secs(10))


async def a2b(x: Ctx) -> str:
    return await hold_fragments(x, x.n(10), 256, 4095 * 256, x.secs(10))


async def a2c(x: Ctx) -> str:
    return await hold_fragments(x, x.n(300), 256, 4095 * 256, x.secs(10))


# 3
JOINS = 10  # the joins a new chat connection may make at once (chat's JOIN_BURST)


async def a3a(x: Ctx) -> str:
    """Rooms made as fast as possible for 60 s: connections joining 10 new rooms each
    (a line said in every one, so it has history), then hanging up, 100 at a time."""
    errors: Counter[str] = Counter()
    seconds, made, batches = x.secs(60), 0, 0
    end = time.monotonic() + seconds
    outcomes: Counter[str] = Counter()
    while time.monotonic() < end:
        conns, failures = await x.connect_many(100, "chat")
        outcomes.update(failures)
        for conn in conns:
            replies_sample(conn, errors, lambda line: line.startswith("!"))
            conn.write(b"".join(text(f"/join a3-{made + i}") + text("x") for i in range(JOINS)))
            made += JOINS
        for conn in conns:
            await conn.send(frame(CLOSE, struct.pack("!H", 1000)))
        await asyncio.gather(*(c.finish(10) for c in conns))
        outcomes.update(c.outcome or "open" for c in conns if not (c.outcome or "").startswith("close 1000"))
        for conn in conns:
            conn.abort()
        x.conns.clear()
        batches += 1
    return (f"{made:,} rooms made in {seconds:.0f} s by {batches * 100:,} connections of {JOINS} joins each"
            + (f"; {tally(outcomes.elements())}" if outcomes else "")
            + (f"; replies {error_summary(errors)}" if errors else ""))


async def rooms_of_lines(x: Ctx, rooms: int, lines: int, line: bytes) -> str:
    """Rooms of long lines, each connection making 10 of them."""
    errors: Counter[str] = Counter()
    conns, failures = await x.connect_many(-(-rooms // JOINS), "chat")
    for c in conns:
        replies_sample(c, errors, lambda line: line.startswith("!"))
    frame_line = text(line)

    async def one(k: int, conn: Conn) -> int:
        done = 0
        for room in range(k * JOINS, min(rooms, (k + 1) * JOINS)):
            if not await conn.send(text(f"/join a3-{room}") + frame_line * lines):
                break
            done += 1
        return done
    gate = asyncio.Semaphore(8)

    async def gated(k: int, conn: Conn) -> int:
        async with gate:
            return await one(k, conn)
    done = sum(await asyncio.gather(*(gated(k, c) for k, c in enumerate(conns))))
    await asyncio.sleep(2)
    sent = done * lines * len(line)
    return (f"{done:,} rooms x {lines} lines of {len(line) // KIB} KiB sent ({sent / MIB:,.0f} MiB) "
            f"by {len(conns)} connections: {states(conns)}"
            + (f"; {tally(failures.elements())}" if failures else "")
            + (f"; replies {error_summary(errors)}" if errors else ""))


async def a3b(x: Ctx) -> str:
    return await rooms_of_lines(x, x.n(2000), 20, b"x" * (64 * KIB))


async def a3c(x: Ctx) -> str:
    """The same bytes of history as 3b's rooms keep (4 x 64 KiB), in lines holding one emoji."""
    return await rooms_of_lines(x, x.n(2000), 4, "\N{GRINNING FACE}".encode() + b"x" * (64 * KIB - 4))


# 4
async def put_many(x: Ctx, senders: int, per_sender: int, value: bytes, prefix: str) -> tuple[int, str]:
    errors: Counter[str] = Counter()
    conns = [await x.connect("JSONsvc") for _ in range(senders)]
    for c in conns:
        replies_sample(c, errors, lambda line: '"error"' in line)

    async def one(k: int, conn: Conn) -> int:
        name, done = f"{prefix}{k}", 0
        per_tick = max(1, min(90, (4 * MIB) // (len(value) + 64)))
        loop = asyncio.get_running_loop()
        due = loop.time()
        while done < per_sender and not conn.ended:
            batch = min(per_tick, per_sender - done)
            data = b"".join(jsonsvc(name, value, put=f"{prefix}/{k}/{done + i}") for i in range(batch))
            if not await conn.send(data):
                break
            done += batch
            due += 0.01  # at most 9,000 puts a second per connection, under the rate limit
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            else:
                due = loop.time()
        return done
    done = sum(await asyncio.gather(*(one(k, c) for k, c in enumerate(conns))))
    await asyncio.sleep(2)
    summary = (f"{done:,} puts of {len(value):,} B from {senders}: "
               f"connections {states(conns)}"
               + (f"; replies {error_summary(errors)}" if errors else ""))
    return done, summary


async def a4a(x: Ctx) -> str:
    """JSONsvc values of control characters (JSON escapes them 6x), many senders, many topics."""
    return (await put_many(x, x.n(20), 10_000, b"\x01" * KIB, "a4a"))[1]


async def a4b(x: Ctx) -> str:
    return (await put_many(x, x.n(10), 30, b"v" * (MIB - 512), "a4b"))[1]


async def a4c(x: Ctx) -> str:
    """MQTT retained publications: 10 clients x 10,000 of 1 KiB, then 300 of ~1 MiB."""
    clients, per_client = x.n(10), 10_000
    conns = [await x.connect("mqtt", "/mqtt") for _ in range(clients)]
    for k, conn in enumerate(conns):
        await conn.send(mqtt_connect(f"a4c-{k}"))
    small, large = b"\x01" * KIB, b"v" * (MIB - 512)

    async def one(k: int, conn: Conn) -> int:
        done = 0
        loop = asyncio.get_running_loop()
        due = loop.time()
        while done < per_client and not conn.ended:
            batch = min(90, per_client - done)
            data = b"".join(mqtt_publish(f"a4c/{k}/{done + i}", small) for i in range(batch))
            if not await conn.send(data):
                break
            done += batch
            due += 0.01
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
        for i in range(max(1, x.n(300) // clients)):
            if not await conn.send(mqtt_publish(f"a4c/{k}/large/{i}", large)):
                break
            done += 1
        return done
    done = sum(await asyncio.gather(*(one(k, c) for k, c in enumerate(conns))))
    await asyncio.sleep(2)
    return f"{done:,} retained PUBLISHes from {clients}: connections {states(conns)}"


# 5
async def a5(x: Ctx) -> str:
    """Puts to new services from 10 senders at 1,000/s each; a requester of a5/# counts them."""
    seconds, senders = x.secs(60, 6), 10
    watcher = await x.connect("JSONsvc")
    arrivals: list[float] = []
    watcher.on_message = lambda _op, _payload: arrivals.append(time.monotonic())
    await watcher.send(jsonsvc("a5watch", requests="a5/#"))
    await asyncio.sleep(0.5)
    errors: Counter[str] = Counter()
    conns = [await x.connect("JSONsvc") for _ in range(senders)]
    for c in conns:
        replies_sample(c, errors, lambda line: '"error"' in line)
    x.mark()
    start = time.monotonic()

    async def one(k: int, conn: Conn) -> int:
        loop = asyncio.get_running_loop()
        end, done, due = loop.time() + seconds, 0, loop.time()
        while loop.time() < end and not conn.ended:
            data = b"".join(jsonsvc(f"a5s{k}", b"1", put=f"a5/{k}/{done + i}") for i in range(10))
            if not await conn.send(data):
                break
            done += 10
            due += 0.01
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            else:
                due = loop.time()
        return done
    done = sum(await asyncio.gather(*(one(k, c) for k, c in enumerate(conns))))
    sent_for = time.monotonic() - start
    await asyncio.sleep(2)
    window = min(5.0, sent_for / 2)
    first = sum(1 for t in arrivals if start <= t < start + window) / window
    last = sum(1 for t in arrivals if start + sent_for - window <= t < start + sent_for) / window
    return (f"{done:,} puts sent in {sent_for:.0f} s ({done / sent_for:,.0f}/s), "
            f"{len(arrivals):,} delivered; "
            f"delivered/s {first:,.0f} in the first {window:.0f} s, {last:,.0f} in the last {window:.0f}; "
            f"senders {states(conns)}"
            + (f"; replies {error_summary(errors)}" if errors else ""))


# 6
async def repeat_listing(x: Ctx, conn: Conn, request: bytes, marker: Callable[[str], bool],
                         seconds: float) -> str:
    replies, size = 0, 0
    errors: Counter[str] = Counter()

    def seen(_op: int, payload: bytes) -> None:
        nonlocal replies, size
        line = payload[:200].decode(errors="replace")
        if marker(line):
            errors[re.sub(r"\d+", "N", line[:100])] += 1
        else:
            replies += 1
            size += len(payload)
    conn.on_message = seen
    x.mark()
    sent = await pace(conn, request, 10, 0.01, seconds)  # 1,000 requests a second
    await asyncio.sleep(2)
    return (f"{sent:,} requests in {seconds:.0f} s: {replies:,} listings ({size / MIB:,.1f} MiB)"
            + (f", refusals {error_summary(errors)}" if errors else "")
            + f"; connection {conn.outcome or 'open'}")


async def a6a(x: Ctx) -> str:
    """JSONsvc `services` repeated with 50,000 services."""
    await put_many(x, x.n(5), 10_000, b"1", "a6")
    conn = await x.connect("JSONsvc")
    await conn.send(jsonsvc("a6list", cmd="whoami", to="JSONsvc"))
    return await repeat_listing(x, conn, jsonsvc("a6list", cmd="services", to="JSONsvc"),
                                lambda line: '"error"' in line, x.secs(20))


async def a6b(x: Ctx) -> str:
    """chat `/rooms` repeated with 5,000 rooms that have someone in them."""
    # Each goes to a room of its own at once: 5,000 in the lobby would be 7c's notice storm.
    await x.connect_many(x.n(5000), "chat", first=lambda i: text(f"/join a6-{i}"), parallel=50)
    await asyncio.sleep(2)
    conn = await x.connect("chat")
    return await repeat_listing(x, conn, text("/rooms"), lambda line: line.startswith("!"), x.secs(20))


async def a6c(x: Ctx) -> str:
    """command `clients` repeated with 5,000 clients."""
    await x.connect_many(x.n(5000), "echo")
    conn = await x.connect("command")
    return await repeat_listing(x, conn, text("clients"), lambda line: line.startswith("error"), x.secs(20))


# 7
async def a7a(x: Ctx) -> str:
    """One client asks for 100,000 topics (JSONsvc requests, 5,000 names a message)."""
    conn = await x.connect("JSONsvc")
    errors: Counter[str] = Counter()
    replies_sample(conn, errors, lambda line: '"error"' in line)
    total = x.n(100_000)
    for start in range(0, total, 5000):
        names = [f"a7/{i}" for i in range(start, min(total, start + 5000))]
        await conn.send(jsonsvc("a7one", requests=names))
    await asyncio.sleep(2)
    return (f"{total:,} topics asked: {error_summary(errors) or 'no refusal'}; "
            f"connection {conn.outcome or 'open'}")


async def a7b(x: Ctx) -> str:
    """100 clients x 1,000 topics live, then 5,000 chat clients leave at once."""
    holders, per = x.n(100), 1000
    subscribers = [await x.connect("JSONsvc") for _ in range(holders)]
    errors: Counter[str] = Counter()
    for k, conn in enumerate(subscribers):
        replies_sample(conn, errors, lambda line: '"error"' in line)
        await conn.send(jsonsvc(f"a7h{k}", requests=[f"a7/{k}/{i}" for i in range(per)]))
    leavers, _ = await x.connect_many(x.n(5000), "chat", first=lambda i: text(f"/join a7-{i}"), parallel=50)
    await asyncio.sleep(2)
    x.mark()
    start = time.monotonic()
    for conn in leavers:
        conn.write(frame(CLOSE, struct.pack("!H", 1000)))
    await asyncio.gather(*(c.finish(120) for c in leavers))
    took = time.monotonic() - start
    for conn in leavers:
        conn.abort()
    await asyncio.sleep(2)
    return (f"{holders * per:,} topics live ({error_summary(errors) or 'no refusal'}); "
            f"{len(leavers):,} chat clients left, all closes answered in {took:.1f} s")


async def a7c(x: Ctx) -> str:
    """5,000 chat clients connect into the lobby (each arrival announced to everyone there), then leave."""
    count = x.n(5000)
    start = time.monotonic()
    try:
        people, failures = await asyncio.wait_for(x.connect_many(count, "chat"), x.secs(120, 10))
        took = f"{len(people):,} in the lobby in {time.monotonic() - start:.1f} s"
    except TimeoutError:
        people, failures = list(x.conns), Counter[str]()
        took = f"only {len(people):,} of {count:,} in the lobby after {x.secs(120, 10):.0f} s"
    notices = sum(c.frames for c in people)
    start = time.monotonic()
    for conn in people:
        conn.write(frame(CLOSE, struct.pack("!H", 1000)))
    left = await asyncio.gather(*(c.finish(60) for c in people))
    gone = sum(1 for outcome in left if outcome != "open")
    return (f"{took} ({notices:,} notices received); {gone:,} left, the last close answered "
            f"{time.monotonic() - start:.1f} s after the first was sent"
            + (f"; {tally(failures.elements())}" if failures else ""))


# 8
async def a8(x: Ctx) -> str:
    """Pipelined /who and 256 KiB lines into a shared room, by four connections that never read."""
    conns = [await x.connect("chat", read=False) for _ in range(4)]
    for conn in conns:
        conn.write(text("/join a8"))
    line = text(b"w" * (256 * KIB))
    unit = text("/who") * 89 + line  # 90 messages a tick, 9,000 a second
    sent = await asyncio.gather(*(pace(c, unit, 1, 0.01, x.secs(6)) for c in conns))
    got = await finish_all(conns, 10)
    return f"{sum(sent) * 90:,} messages ({sum(sent) * 256 // 1024:,} MiB of lines) from 4 non-readers: {got}"


# 9
FD_LIMIT = 10_000


async def new_client(x: Ctx) -> str:
    start = time.monotonic()
    try:
        conn = await ws_connect(x.host, x.port, "chat", src="127.0.0.254", timeout=30)
        conn.abort()
        what = "upgraded (101)"
    except Refused as exc:
        what = exc.outcome
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        what = f"failed: {type(exc).__name__}"
    return f"a new client: {what} in {time.monotonic() - start:.2f} s"


async def chat_join(x: Ctx, limit: float = 30) -> str:
    """A new chat client: its handshake, then a /join until its "joined" notice comes back."""
    start = time.monotonic()
    try:
        conn = await ws_connect(x.host, x.port, "chat", "/?name=a13probe", src="127.0.0.254", timeout=limit)
    except Refused as exc:
        return f"a new chat client: {exc.outcome} in {time.monotonic() - start:.2f} s"
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return f"a new chat client: failed ({type(exc).__name__}) in {time.monotonic() - start:.2f} s"
    upgraded = time.monotonic() - start
    joined = asyncio.get_running_loop().create_future()

    def seen(_op: int, payload: bytes) -> None:
        if payload == b"* a13probe joined" and not joined.done():
            joined.set_result(time.monotonic() - start)
    conn.on_message = seen
    conn.start_reading()
    await conn.send(text("/join a13room"))
    try:
        took = await asyncio.wait_for(joined, limit)
        return f"a new chat client upgraded in {upgraded:.2f} s and joined a room in {took:.2f} s"
    except TimeoutError:
        return f"a new chat client upgraded in {upgraded:.2f} s, its /join unanswered after {limit:.0f} s"
    finally:
        conn.abort()


async def healthz_once(x: Ctx, timeout: float = 10) -> str:
    start = time.monotonic()
    try:
        status, _ = await http_get(x.host, x.port, "/healthz", timeout, src="127.0.0.253")
        return f"/healthz {status} in {time.monotonic() - start:.2f} s"
    except (OSError, TimeoutError, IndexError, ValueError) as exc:
        return f"/healthz failed ({type(exc).__name__}) after {time.monotonic() - start:.2f} s"


async def a9a(x: Ctx) -> str:
    """Past the open-files limit: 1.1 x the server's limit in echo connections, from two addresses."""
    limit = x.fd_limit  # type: ignore[attr-defined]
    start = time.monotonic()
    conns, failures = await x.connect_many(int(limit * 1.1), "echo")
    took = time.monotonic() - start
    probe = await new_client(x)
    health = await healthz_once(x)
    return (f"server's open-files limit {limit:,}: {len(conns):,} of {int(limit * 1.1):,} upgraded "
            f"in {took:.0f} s"
            + (f", {tally(failures.elements())}" if failures else "") + f"; then {probe}, {health}")


async def a9b(x: Ctx) -> str:
    """1.2 x the server's open-files limit in idle TCP connects from one address, then a new client."""
    limit = x.fd_limit  # type: ignore[attr-defined]
    count = int(limit * 1.2)
    gate = asyncio.Semaphore(500)
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failed: Counter[str] = Counter()

    async def one() -> None:
        async with gate:
            try:
                held.append(await asyncio.wait_for(
                    asyncio.open_connection(x.host, x.port, local_addr=("127.0.0.2", 0)), 5))
            except (OSError, TimeoutError) as exc:
                failed[type(exc).__name__] += 1
    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    connected = time.monotonic() - start
    probe, health = await asyncio.gather(new_client(x), healthz_once(x, 30))

    async def fate(reader: asyncio.StreamReader) -> str:
        try:
            data = await asyncio.wait_for(reader.read(200), 15)
        except TimeoutError:
            return "still open after 15 s"
        except (ConnectionError, OSError):
            return "reset"
        if not data:
            return "closed, nothing said"
        return data.partition(b"\r\n")[0].decode(errors="replace")
    fates = await asyncio.gather(*(fate(r) for r, _ in held))
    for _, writer in held:
        writer.transport.abort()
    return (f"server's open-files limit {limit:,}: {len(held):,} of {count:,} idle connects "
            f"in {connected:.1f} s"
            + (f" ({tally(failed.elements())})" if failed else "")
            + f"; {probe}, {health}; the idle ones: {tally(fates)}")


# 10
async def a10(x: Ctx) -> str:
    """500 connections sending pings (125-byte payloads) at 9,000/s each, never reading."""
    conns, _ = await x.connect_many(x.n(500), "echo", read=False)
    ping = frame(PING, b"p" * 125)
    sent = await asyncio.gather(*(pace(c, ping, 450, 0.05, x.secs(20, 3)) for c in conns))
    got = await finish_all(conns, 10)
    return f"{len(conns)} flooders, {sum(sent):,} pings sent: {got}"


# 11
async def a11a(x: Ctx) -> str:
    conn = await x.connect("echo")
    chunks = await flood(conn, frame(PONG) * 10_000, x.secs(20))
    return f"{await conn.finish(5)} after {chunks * 10_000:,} unsolicited pongs"


async def a11b(x: Ctx) -> str:
    conns, _ = await x.connect_many(x.n(50), "echo")
    sent = await asyncio.gather(*(pace(c, frame(PONG), 450, 0.05, x.secs(20)) for c in conns))
    await asyncio.sleep(1)
    return (f"{len(conns)} connections x 9,000 pongs/s (under the limit), {sum(sent):,} sent: "
            f"{states(conns)}")


# 12
async def a12(x: Ctx) -> str:
    conns, _ = await x.connect_many(x.n(100), "echo")
    seconds = x.secs(20)
    sent = await asyncio.gather(*(pace(c, frame(PING), 450, 0.05, seconds) for c in conns))
    await asyncio.sleep(2)
    closed = [c for c in conns if c.ended]
    return (f"{len(conns)} connections pacing 9,000 pings/s ({sum(sent) / seconds:,.0f}/s sent in all): "
            f"{len(closed)} closed" + (f" ({tally(c.outcome or '' for c in closed)})" if closed else "")
            + ", expected none")


# 13
async def a13(x: Ctx) -> str:
    assert x.redis is not None
    stopped = x.secs(10, 3)
    polls: list[tuple[float, str]] = []

    async def poll(until: float) -> None:
        while time.monotonic() < until:
            at = time.monotonic()
            try:
                status, _ = await http_get(x.host, x.port, "/healthz", 2, src="127.0.0.253")
                polls.append((at, str(status)))
            except (OSError, TimeoutError, IndexError, ValueError):
                polls.append((at, "no answer in 2 s"))
            await asyncio.sleep(max(0.0, 0.25 - (time.monotonic() - at)))
    os.kill(x.redis.proc.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    await asyncio.sleep(0.5)
    joining = asyncio.create_task(chat_join(x))
    await poll(frozen + stopped)
    os.kill(x.redis.proc.pid, signal.SIGCONT)
    thawed = time.monotonic()
    await poll(thawed + x.secs(10, 5))
    join = await joining
    first_bad = next((at - frozen for at, s in polls if at < thawed and s != "200"), None)
    back = next((at - thawed for at, s in polls if at >= thawed and s == "200"), None)
    during = Counter(s for at, s in polls if at < thawed)
    return (f"redis stopped {stopped:.0f} s: /healthz during the stop {dict(during)}, first not-200 "
            + (f"{first_bad:.1f} s in" if first_bad is not None else "never")
            + "; 200 again " + (f"{back:.1f} s after SIGCONT" if back is not None else "not within 10 s")
            + f"; {join} (started 0.5 s into the stop)")


# 14
async def a14(x: Ctx) -> str:
    """50 echo clients sending 64 KiB messages at 100/s each, never reading the echoes."""
    conns, _ = await x.connect_many(x.n(50), "echo", read=False)
    message = text(b"e" * (64 * KIB))
    sent = await asyncio.gather(*(pace(c, message, 5, 0.05, x.secs(20, 3)) for c in conns))
    got = await finish_all(conns, 10)
    return f"{len(conns)} non-readers, {sum(sent) * 64 // 1024:,} MiB sent: {got}"


Attack = Callable[[Ctx], Awaitable[str]]


@dataclass(frozen=True)
class Spec:
    number: str
    title: str
    run: Attack
    redis_only: bool = False
    fd_limit: bool = False


ATTACKS = [
    Spec("1a", "empty continuation frames, one message, as fast as possible", a1a),
    Spec("1b", "messages of 4,000 empty fragments, back to back", a1b),
    Spec("2a", "10 x unfinished 1 MiB text in 2-byte fragments", a2a),
    Spec("2b", "10 x unfinished 1 MiB text in 4,095 fragments of 256 B", a2b),
    Spec("2c", "300 x unfinished 1 MiB text in 4,095 fragments of 256 B", a2c),
    Spec("3a", "chat rooms made as fast as possible (10 per connection), 60 s", a3a),
    Spec("3b", "2,000 chat rooms of 20 x 64 KiB lines", a3b),
    Spec("3c", "2,000 chat rooms of 4 x 64 KiB lines holding one emoji", a3c),
    Spec("4a", "JSONsvc: 20 x 10,000 puts of 1 KiB control characters", a4a),
    Spec("4b", "JSONsvc: 300 puts of 1 MiB", a4b),
    Spec("4c", "MQTT retained: 100,000 of 1 KiB, then 300 of 1 MiB", a4c),
    Spec("5", "JSONsvc puts to new services, 10 x 1,000/s for 60 s", a5),
    Spec("6a", "JSONsvc `services` x 1,000/s with 50,000 services", a6a),
    Spec("6b", "chat `/rooms` x 1,000/s with 5,000 rooms", a6b),
    Spec("6c", "command `clients` x 1,000/s with 5,000 clients", a6c),
    Spec("7a", "one client asks for 100,000 topics", a7a),
    Spec("7b", "100,000 live topics, then 5,000 clients leave at once", a7b),
    Spec("7c", "5,000 chat clients join the lobby, then leave", a7c),
    Spec("8", "4 non-readers: pipelined /who and 256 KiB lines, 6 s", a8),
    Spec("9a", "connections past the open-files limit", a9a, fd_limit=True),
    Spec("9b", "idle TCP connects past the open-files limit, then a new client", a9b, fd_limit=True),
    Spec("10", "500 never-reading ping flooders, 20 s", a10),
    Spec("11a", "unsolicited pongs as fast as possible", a11a),
    Spec("11b", "50 connections x 9,000 pongs/s, 20 s", a11b),
    Spec("12", "100 connections pacing 9,000 pings/s, 20 s", a12),
    Spec("13", "redis-server stopped (SIGSTOP) 10 s", a13, redis_only=True),
    Spec("14", "50 never-reading echo clients, 64 KiB x 100/s each, 20 s", a14),
]


# ---------------------------------------------------------------- running one attack

async def run_one(spec: Spec, args: argparse.Namespace) -> Result:
    result = Result(spec.number, spec.title)
    redis = Redis() if args.redis else None
    extra = list(args.server_arg) + (["--redis", redis.url] if redis else [])
    fd_limit = max(512, int(FD_LIMIT * args.scale)) if spec.fd_limit else None
    server = Server(extra, fd_limit)
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    ours, theirs = spawn.Pipe()
    watcher = spawn.Process(target=bystander_main, args=("127.0.0.1", server.port, stop, theirs), daemon=True)
    sampler = RssSampler(server)
    ctx = Ctx("127.0.0.1", server.port, args.scale, server, redis)
    ctx.fd_limit = fd_limit  # type: ignore[attr-defined]
    started = time.monotonic()
    try:
        watcher.start()
        if not await asyncio.to_thread(ours.poll, 30):
            raise SystemExit("the bystander did not connect within 30 s")
        ours.recv()
        await asyncio.sleep(0.5 if args.scale >= 0.1 else 0.1)
        sampler.start()
        metrics_before = metrics_totals((await http_get(ctx.host, ctx.port, "/metrics", 10))[1])
        marks = {"at": time.monotonic(), "rss": server.rss_mib(), "cpu": server.cpu_seconds()}

        def mark() -> None:
            sampler.peak = server.rss_mib()
            marks.update(at=time.monotonic(), rss=sampler.peak, cpu=server.cpu_seconds())
        ctx.marked = mark
        print(f"== {spec.number}: {spec.title}", flush=True)
        try:
            result.got = await asyncio.wait_for(spec.run(ctx), args.timeout)
        except TimeoutError:
            result.got = f"attack still running after {args.timeout:.0f} s (stopped)"
        except Exception as exc:
            result.got = f"attack failed: {type(exc).__name__}: {exc}"
        for conn in ctx.conns:
            conn.abort()
        # The attack is over; the server must come back by itself.
        health_start = time.monotonic()
        health = "no answer within 120 s"
        while time.monotonic() - health_start < 120:
            if server.proc.poll() is not None:
                health = f"no: the server exited ({server.proc.returncode})"
                break
            try:
                status, body = await http_get(ctx.host, ctx.port, "/healthz", 5, src="127.0.0.253")
                waited = time.monotonic() - health_start
                health = (f"yes ({waited:.1f} s)" if waited >= 1 else "yes") if status == 200 \
                    else f"no: {status} {body.strip()[:60]}"
                break
            except (OSError, TimeoutError, IndexError, ValueError):
                await asyncio.sleep(0.5)
        result.healthy = health
        await asyncio.sleep(2 if args.scale >= 0.1 else 0.5)  # let the server settle
        result.rss_before, result.rss_after = marks["rss"], server.rss_mib()
        result.rss_peak = max(sampler.peak, result.rss_after)
        result.cpu = server.cpu_seconds() - marks["cpu"]
        with contextlib.suppress(OSError, TimeoutError, IndexError, ValueError):
            after = metrics_totals((await http_get(ctx.host, ctx.port, "/metrics", 10))[1])
            result.counters = {k: v - metrics_before.get(k, 0) for k, v in after.items()
                               if v - metrics_before.get(k, 0) and not k.startswith("closes{")}
        stop.set()
        if await asyncio.to_thread(ours.poll, 20):
            report = ours.recv()
            trips = [seconds for at, seconds in report["trips"] if at >= marks["at"]]
            if report["pending"] and report["pending"][0] >= marks["at"] - 3600:
                trips.append(report["pending"][1])
                result.max_unfinished = report["pending"][1] >= max(trips)
            result.trips = len(trips)
            result.median_ms = 1000 * statistics.median(trips) if trips else 0.0
            result.max_ms = 1000 * max(trips) if trips else 0.0
            result.bystander_problem = report["problem"]
        else:
            result.bystander_problem = "no report from the bystander"
    finally:
        sampler.running = False
        stop.set()
        watcher.join(5)
        if watcher.is_alive():
            watcher.kill()
        for conn in ctx.conns:
            conn.abort()
        code = server.stop()
        if code not in (0, None, -signal.SIGTERM):
            result.notes.append(f"server exit status {code}")
        if redis is not None:
            redis.stop()
    result.warnings = server.warning_count
    result.notes += ctx.notes
    result.notes += [w for w in server.warnings if "Traceback" in w or "ERROR" in w][:3]
    result.seconds = time.monotonic() - started
    return result


def show(result: Result) -> None:
    r = result
    unfinished = " (still waiting when the run ended)" if r.max_unfinished else ""
    print(f"  attacker got: {r.got}")
    print(f"  server RSS: {r.rss_before:.0f} MiB before, {r.rss_peak:.0f} peak "
          f"(+{r.rss_peak - r.rss_before:.0f}), "
          f"{r.rss_after:.0f} after; CPU {r.cpu:.1f} s; {r.warnings} warning lines logged")
    print(f"  bystander: {r.trips} round trips, median {r.median_ms:.1f} ms, "
          f"max {r.max_ms:.0f} ms{unfinished}"
          + (f"; problem: {r.bystander_problem}" if r.bystander_problem else ""))
    print(f"  healthy after: {r.healthy}")
    if r.counters:
        print("  /metrics moved: " + ", ".join(f"{k} +{v:g}" for k, v in sorted(r.counters.items())))
    for note in r.notes:
        print(f"  note: {note}")
    print(f"  ({r.seconds:.0f} s)", flush=True)


def table(results: list[Result]) -> str:
    lines = ["| # | attack | attacker got | server RSS MiB: before, peak (growth), after | CPU s | "
             "bystander round trips: n, median, max | healthy after |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        got = r.got.replace("|", "/")
        most = f"{r.max_ms / 1000:.1f} s" if r.max_ms >= 1000 else f"{r.max_ms:.0f} ms"
        if r.max_unfinished:
            most = f"> {most} (unfinished)"
        by = f"{r.trips}, {r.median_ms:.1f} ms, {most}"
        if r.bystander_problem:
            by += f"; {r.bystander_problem}"
        rss = f"{r.rss_before:.0f}, {r.rss_peak:.0f} (+{r.rss_peak - r.rss_before:.0f}), {r.rss_after:.0f}"
        lines.append(f"| {r.attack} | {r.title} | {got} | {rss} | {r.cpu:.1f} | {by} | {r.healthy} |")
    return "\n".join(lines)


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def selected(only: str | None, redis: bool) -> list[Spec]:
    if not only:
        return [s for s in ATTACKS if redis or not s.redis_only]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [s for s in ATTACKS if any(s.number == w or s.number.rstrip("abc") == w for w in wanted)]
    unknown = [w for w in wanted if not any(s.number == w or s.number.rstrip("abc") == w for s in ATTACKS)]
    if unknown:
        raise SystemExit(f"unknown attack {', '.join(unknown)} (--list shows them)")
    return chosen


async def main_async(args: argparse.Namespace, specs: list[Spec]) -> list[Result]:
    results = []
    for spec in specs:
        if spec.redis_only and not args.redis:
            print(f"== {spec.number}: {spec.title}: skipped (needs --redis)", flush=True)
            continue
        result = await run_one(spec, args)
        show(result)
        results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--scale", type=float, default=1.0, help="sizes and durations times this (default 1)")
    parser.add_argument("--only", help="attacks to run, e.g. 1,2,3b (default: all)")
    parser.add_argument("--redis", action="store_true",
                        help="run the server on a private redis-server (needed by 13)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra wsplex flag (repeatable)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one attack may take")
    parser.add_argument("--head", action="store_true",
                        help="run the server from the checkout's last commit (git archive HEAD src), "
                             "not from the working tree others may be editing")
    parser.add_argument("--json", metavar="FILE", help="also write the results there")
    parser.add_argument("--list", action="store_true", help="list the attacks and exit")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="print the table of results written by earlier runs' --json, and exit")
    args = parser.parse_args()
    if args.merge:
        merged: list[Result] = []
        for path in args.merge:
            with open(path) as saved:
                merged += [Result(**entry) for entry in json.load(saved)]
        print(table(merged))
        return 0
    if args.list:
        for spec in ATTACKS:
            print(f"{spec.number:4} {spec.title}" + (" (--redis)" if spec.redis_only else ""))
        return 0
    if not 0 < args.scale <= 1:
        parser.error("--scale takes a number in (0, 1]")
    specs = selected(args.only, args.redis)
    snapshot = tempfile.TemporaryDirectory(prefix="wsplex-abuse-") if args.head else None
    if snapshot is not None:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit = subprocess.run(["git", "-C", repo, "log", "-1", "--format=%h %s"], check=True,
                                capture_output=True, text=True).stdout.strip()
        archive = subprocess.run(["git", "-C", repo, "archive", "HEAD", "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", snapshot.name], input=archive, check=True)
        Server.source = os.path.join(snapshot.name, "src")
        print(f"server from commit {commit[:100]}", flush=True)
    raise_open_files_limit()
    pin(CLIENT_CORE)
    print(f"wsplex abuse run, scale {args.scale:g}, {'Redis' if args.redis else 'memory'} hub, "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    try:
        import uvloop
        results = uvloop.run(main_async(args, specs))
    except ImportError:
        results = asyncio.run(main_async(args, specs))
    print("\n" + table(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(r) for r in results], out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
