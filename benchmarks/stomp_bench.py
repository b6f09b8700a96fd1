"""STOMP over WebSocket: topic fan-out and queue throughput, wsplex against RabbitMQ's Web-STOMP.

    .venv/bin/python benchmarks/stomp_bench.py [--rounds 3] [--only fanout,queue,queue-ack]
    .venv/bin/python benchmarks/stomp_bench.py --smoke      # a few seconds (run.py --smoke runs it)

Workloads:

* ``fanout``: ``--receivers`` (500) subscribers of ``/topic/x`` (ack auto), one
  publisher; the publisher keeps at most ``--window`` messages in flight per
  receiver (message n+W goes out once every receiver has message n), SENDs
  of one turn in one write. ``--messages`` are measured after a warm-up.
* ``queue``: ``--producers`` SEND to ``/queue/q``, ``--consumers`` subscribe
  to it (ack auto); at most ``--queue-window`` messages sent and not yet
  consumed. ``queue-ack``: the same with ``ack:client-individual``, each
  MESSAGE ACKed (the ACKs of one loop turn in one write).

The figure is the **server's CPU time per delivered (consumed) message**:
user + system time of the server process over the measured messages, read
from ``/proc`` (psutil). wsplex (``v12.stomp``, ``v11.stomp``, ``v10.stomp``)
runs in a fresh process per run, pinned to core 0 (``run.server_process``);
RabbitMQ is the machine's service: its ``beam.smp`` (the process listening on
port 15674, ``rabbitmq-plugins enable rabbitmq_web_stomp``) is measured the
same way and, unless ``--no-pin``, its threads are pinned to core 0 for the
run and given their affinity back after. This process is the load generator:
picows clients on uvloop, raw STOMP 1.2 frames, pinned to core 1; it reports
its own CPU (near 100 % would mean it set the pace). RabbitMQ is skipped
with a message when nothing listens on its port. Servers take turns inside
each round, order rotated; medians over rounds, ratio wsplex / RabbitMQ.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import uvloop
from loadgen import Client, masked_text, raise_fd_limit
from picows import ws_connect
from run import LOADGEN_CORE, SERVER_CORE, fmt, free_port, machine, median, server_process

WSPLEX_PROTOCOLS = "v12.stomp,v11.stomp,v10.stomp"
RABBITMQ_PORT = 15674
TOPIC, QUEUE = b"/topic/x", b"/queue/q"
MESSAGE = b"MESSAGE\n"
WORKLOADS = ("fanout", "queue", "queue-ack")


def frame(command: bytes, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = b"".join(f"{k}:{v}\n".encode() for k, v in headers.items())
    return command + b"\n" + lines + b"\n" + body + b"\0"


@dataclass
class Target:
    name: str
    url: str
    login: dict[str, str]
    process: psutil.Process

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)


# -- STOMP clients over picows --------------------------------------------------------------


async def wait_frame(client: Client, command: bytes, timeout: float = 30) -> bytes:
    """The next WebSocket message of ``client``, which must start with ``command``."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_text(c: Client, data: bytes) -> None:
        if not got.done():
            got.set_result(data)

    client.on_text = on_text
    data = await asyncio.wait_for(got, timeout)
    if not data.startswith(command):
        raise SystemExit(f"stomp_bench: expected {command.decode()}, got {data[:200]!r}")
    return data


async def open_clients(target: Target, count: int, offset: int = 0) -> list[Client]:
    """``count`` STOMP 1.2 connections past CONNECTED, 100 at a time."""
    made: list[Client] = []
    connect = frame(b"CONNECT", {"accept-version": "1.2", "host": "/", "heart-beat": "0,0", **target.login})

    async def one(i: int) -> None:
        client = Client(offset + i)
        await ws_connect(lambda: client, target.url, extra_headers={"Sec-WebSocket-Protocol": "v12.stomp"},
                         read_buffer_init_size=1024, websocket_handshake_timeout=30)
        waiting = asyncio.ensure_future(wait_frame(client, b"CONNECTED"))
        await asyncio.sleep(0)
        client.send(connect)
        await waiting
        made.append(client)

    for start in range(0, count, 100):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 100))))
    made.sort(key=lambda c: c.index)
    return made


async def subscribe(clients: list[Client], destination: bytes, ack: str = "auto") -> None:
    """SUBSCRIBE each client and wait for the RECEIPT: the subscription is in place."""
    async def one(client: Client) -> None:
        waiting = asyncio.ensure_future(wait_frame(client, b"RECEIPT"))
        await asyncio.sleep(0)
        client.send(frame(b"SUBSCRIBE", {"id": "0", "destination": destination.decode(), "ack": ack,
                                         "receipt": "sub"}))
        await waiting

    await asyncio.gather(*(one(c) for c in clients))


def still_open(clients: list[Client], work: str) -> None:
    """A connection the server closed during the run (an ERROR frame: a refused ACK, say)
    would make its figures wrong: stop the run."""
    lost = sum(c.closed.done() for c in clients)
    if lost:
        raise SystemExit(f"stomp_bench: the server closed {lost} of {len(clients)} connections during {work}")


async def close_all(clients: list[Client]) -> None:
    """DISCONNECT and close every client, and wait until the server has let go of them
    (a server stopped with connections open would wait for their close handshakes)."""
    for client in clients:
        if client.transport is not None:
            with contextlib.suppress(Exception):
                client.transport.send(1, frame(b"DISCONNECT", {}))  # 1: a text message
            client.transport.disconnect()
    await asyncio.wait([c.closed for c in clients], timeout=10)


class Meter:
    """Server CPU, own CPU and wall time between :meth:`start` and :meth:`stop`."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def start(self) -> None:
        self.cpu0, self.own0, self.t0 = self.target.cpu(), time.process_time(), time.perf_counter()

    def stop(self, delivered: int) -> dict[str, Any]:
        cpu, own, wall = (self.target.cpu() - self.cpu0, time.process_time() - self.own0,
                          time.perf_counter() - self.t0)
        return {"messages": delivered, "seconds": round(wall, 3),
                "server_cpu_us_per_msg": cpu * 1e6 / delivered, "msgs_per_s": delivered / wall,
                "server_cpu_pct": cpu * 100 / wall, "loadgen_cpu_pct": own * 100 / wall}


# -- workloads -----------------------------------------------------------------------------


async def fanout(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    receivers = await open_clients(target, args.receivers)
    (publisher,) = await open_clients(target, 1, offset=len(receivers))
    await subscribe(receivers, TOPIC)
    loop = asyncio.get_running_loop()
    total, window = len(receivers), args.window
    ring = [0] * (window + 1)  # receipts of each in-flight message, by sequence number
    state = {"sent": 0, "oldest": 0, "queued": False, "limit": 0}
    reached: dict[int, asyncio.Future[None]] = {}
    out = publisher.transport.underlying_transport  # type: ignore[union-attr]
    send = masked_text(frame(b"SEND", {"destination": TOPIC.decode()}, b"x" * args.size))
    wire = [0]

    def send_window() -> None:
        state["queued"] = False
        room = min(window - (state["sent"] - state["oldest"]), state["limit"] - state["sent"])
        if room > 0:
            state["sent"] += room
            out.write(send * room)

    def on_text(client: Client, data: bytes) -> None:
        wire[0] += len(data)
        for _ in range(data.count(MESSAGE)):
            seq = client.count
            client.count = seq + 1
            slot = seq % len(ring)
            ring[slot] += 1
            if ring[slot] == total and seq == state["oldest"]:
                oldest = seq
                while ring[oldest % len(ring)] == total and oldest < state["sent"]:
                    ring[oldest % len(ring)] = 0
                    oldest += 1
                state["oldest"] = oldest
                done = reached.pop(oldest, None)
                if done is not None:
                    done.set_result(None)
                if not state["queued"]:
                    state["queued"] = True
                    loop.call_soon(send_window)

    async def until(count: int) -> None:
        reached[count] = loop.create_future()
        state["limit"] = count
        send_window()
        await asyncio.wait_for(reached[count], 120)

    for client in receivers:
        client.on_text = on_text
    warmup = args.warmup_messages or args.messages // 10
    await until(warmup)
    meter = Meter(target)
    wire[0] = 0
    meter.start()
    await until(warmup + args.messages)
    result = meter.stop(args.messages * total)
    result["wire_bytes_per_msg"] = wire[0] / (args.messages * total)
    still_open([*receivers, publisher], "fanout")
    await close_all([*receivers, publisher])
    return result


async def queue(target: Target, args: argparse.Namespace, ack: str) -> dict[str, Any]:
    consumers = await open_clients(target, args.consumers)
    producers = await open_clients(target, args.producers, offset=len(consumers))
    await subscribe(consumers, QUEUE, ack)
    loop = asyncio.get_running_loop()
    window = args.queue_window
    state = {"sent": 0, "consumed": 0, "queued": False, "limit": 0, "turn": 0}
    reached: dict[int, asyncio.Future[None]] = {}
    outs = [p.transport.underlying_transport for p in producers]  # type: ignore[union-attr]
    send = masked_text(frame(b"SEND", {"destination": QUEUE.decode()}, b"x" * args.size))
    wire = [0]
    acks: dict[int, list[bytes]] = {}

    def send_window() -> None:
        """Refill the window, the producers taking turns, one write per producer."""
        state["queued"] = False
        room = min(window - (state["sent"] - state["consumed"]), state["limit"] - state["sent"])
        if room <= 0:
            return
        state["sent"] += room
        share, extra = divmod(room, len(outs))
        for i in range(len(outs)):
            n = share + (1 if i < extra else 0)
            if n:
                outs[(state["turn"] + i) % len(outs)].write(send * n)
        state["turn"] += extra

    def consumed(n: int) -> None:
        state["consumed"] += n
        done = reached.pop(state["consumed"], None)
        if done is not None:
            done.set_result(None)
        if not state["queued"]:
            state["queued"] = True
            loop.call_soon(send_window)

    def on_auto(client: Client, data: bytes) -> None:
        wire[0] += len(data)
        consumed(data.count(MESSAGE))

    def flush_acks(client: Client) -> None:
        pending = acks.pop(client.index)
        client.transport.underlying_transport.write(b"".join(pending))  # type: ignore[union-attr]

    def on_individual(client: Client, data: bytes) -> None:
        wire[0] += len(data)
        n = 0
        for message in data.split(b"\0"):
            start = message.find(b"\nack:")
            if start < 0:
                continue
            end = message.index(b"\n", start + 5)
            pending = acks.get(client.index)
            if pending is None:
                pending = acks[client.index] = []
                loop.call_soon(flush_acks, client)
            pending.append(masked_text(b"ACK\nid:" + message[start + 5:end] + b"\n\n\0"))
            n += 1
        consumed(n)

    async def until(count: int) -> None:
        reached[count] = loop.create_future()
        state["limit"] = count
        send_window()
        await asyncio.wait_for(reached[count], 120)

    for client in consumers:
        client.on_text = on_auto if ack == "auto" else on_individual
    warmup = args.warmup_messages or args.queue_messages // 10
    await until(warmup)
    meter = Meter(target)
    wire[0] = 0
    meter.start()
    await until(warmup + args.queue_messages)
    result = meter.stop(args.queue_messages)
    result["wire_bytes_per_msg"] = wire[0] / args.queue_messages
    await asyncio.sleep(0.1)  # the last ACKs out (and any ERROR for them in) before the close
    still_open([*consumers, *producers], f"queue ({ack})")
    await close_all([*consumers, *producers])
    return result


async def run_workload(target: Target, work: str, args: argparse.Namespace) -> dict[str, Any]:
    if work == "fanout":
        return await fanout(target, args)
    return await queue(target, args, "auto" if work == "queue" else "client-individual")


# -- servers -------------------------------------------------------------------------------


def rabbitmq_process(port: int) -> psutil.Process | None:
    """The process listening on ``port`` (RabbitMQ's beam.smp), or None when nothing does."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    except OSError:
        return None
    with contextlib.suppress(psutil.AccessDenied):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return psutil.Process(conn.pid)
    beams = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "beam.smp"]
    return beams[0] if len(beams) == 1 else None


@contextlib.contextmanager
def pinned_threads(process: psutil.Process, core: str, enabled: bool) -> Iterator[str]:
    """Every thread of ``process`` on ``core`` for the run, its affinity given back after;
    yields what was done, for the output."""
    if not enabled:
        yield "not pinned"
        return
    tids = [int(t) for t in os.listdir(f"/proc/{process.pid}/task")]
    before: dict[int, set[int]] = {}
    try:
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):
                before[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {int(core)})
    except PermissionError:
        note = "not pinned (no permission to set its affinity)"
    else:
        note = f"pinned to core {core} ({len(before)} threads)"
    try:
        yield note
    finally:
        for tid, cpus in before.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def settle(process: psutil.Process, limit_pct: float = 5.0, timeout: float = 20.0) -> float:
    """Wait until ``process`` is quiet (RabbitMQ tears down the last run's connections and
    queues in the background); returns its CPU % over the last half second."""
    end = time.monotonic() + timeout
    while True:
        t0 = process.cpu_times()
        time.sleep(0.5)
        t1 = process.cpu_times()
        pct = ((t1.user - t0.user) + (t1.system - t0.system)) * 200
        if pct < limit_pct or time.monotonic() > end:
            return pct


@contextlib.contextmanager
def started(name: str, rabbit: psutil.Process | None) -> Iterator[Target]:
    if name == "rabbitmq":
        assert rabbit is not None
        settle(rabbit)
        yield Target("rabbitmq", f"ws://127.0.0.1:{RABBITMQ_PORT}/ws",
                     {"login": "guest", "passcode": "guest"}, rabbit)
        return
    port = free_port()
    with server_process("wsplex", port, WSPLEX_PROTOCOLS) as proc:
        yield Target("wsplex", f"ws://127.0.0.1:{port}/", {}, psutil.Process(proc.pid))


def delete_rabbitmq_queue() -> None:
    """The benchmark's durable queue ``q`` goes (empty) when the run is over."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is not None:
        subprocess.run([ctl, "delete_queue", "q"], capture_output=True, timeout=60, check=False)


# -- the run -------------------------------------------------------------------------------


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    head = ("| server | server CPU µs/msg | vs RabbitMQ | msgs/s | server CPU % | loadgen CPU % "
            "| wire B/msg |\n|---|---|---|---|---|---|---|\n")
    base = median([r["server_cpu_us_per_msg"] for r in results.get("rabbitmq", [])])
    rows = []
    for server, runs in results.items():
        cpu = median([r["server_cpu_us_per_msg"] for r in runs])
        ratio = f"{fmt(cpu / base)}x" if cpu is not None and base else "—"
        rate, pct, own, wire = (median([r[k] for r in runs]) for k in (
            "msgs_per_s", "server_cpu_pct", "loadgen_cpu_pct", "wire_bytes_per_msg"))
        rows.append(f"| {server} | {fmt(cpu)} | {ratio} | {fmt(rate)} | {fmt(pct, 0)} | {fmt(own, 0)} "
                    f"| {fmt(wire, 0)} |")
    return head + "\n".join(rows)


def title(work: str, args: argparse.Namespace) -> str:
    if work == "fanout":
        return (f"STOMP topic fan-out to {args.receivers}, window {args.window}, "
                f"{args.messages} messages of {args.size} B")
    mode = "ack auto" if work == "queue" else "ack client-individual"
    return (f"STOMP queue, {args.producers} producers, {args.consumers} consumers, {mode}, "
            f"window {args.queue_window}, {args.queue_messages} messages of {args.size} B")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: small counts, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help=f"comma-separated workloads ({','.join(WORKLOADS)})")
    parser.add_argument("--servers", default="wsplex,rabbitmq", help="comma-separated: wsplex,rabbitmq")
    parser.add_argument("--receivers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=400, help="fan-out: messages measured")
    parser.add_argument("--window", type=int, default=4, help="fan-out: messages in flight per receiver")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--queue-messages", type=int, default=100_000, help="queue: messages measured")
    parser.add_argument("--queue-window", type=int, default=64, help="queue: sent, not yet consumed")
    parser.add_argument("--warmup-messages", type=int, default=0, help="default: a tenth of the measured")
    parser.add_argument("--size", type=int, default=32, help="body bytes")
    parser.add_argument("--no-pin", action="store_true", help="leave RabbitMQ's threads where they are")
    parser.add_argument("--json", metavar="PATH", help="also write every raw result here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.receivers, args.messages, args.queue_messages = 1, 20, 50, 500
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    works = [w for w in WORKLOADS if not args.only or w in args.only.split(",")]
    servers = [s for s in ("wsplex", "rabbitmq") if s in args.servers.split(",")]
    rabbit = None
    if "rabbitmq" in servers:
        rabbit = rabbitmq_process(RABBITMQ_PORT)
        if rabbit is None:
            print(f"skipping RabbitMQ: nothing listens on 127.0.0.1:{RABBITMQ_PORT} (as root: "
                  "rabbitmq-plugins enable rabbitmq_web_stomp)", flush=True)
            servers.remove("rabbitmq")
    if not servers or not works:
        return 0
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {int(LOADGEN_CORE)})
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {w: {s: [] for s in servers} for w in works}
    print(f"start: {machine()}", flush=True)
    with contextlib.ExitStack() as stack:
        pin = "absent"
        if rabbit is not None:
            pin = stack.enter_context(pinned_threads(rabbit, SERVER_CORE, not args.no_pin))
            stack.callback(delete_rabbitmq_queue)
        for round_no in range(args.rounds):
            for work in works:
                turn = round_no % len(servers)
                for server in servers[turn:] + servers[:turn]:
                    with started(server, rabbit) as target:
                        result = await run_workload(target, work, args)
                    raw[work][server].append(result)
                    print(f"round {round_no + 1}/{args.rounds} {work:<10} {server:<9} "
                          f"{fmt(result['server_cpu_us_per_msg'])} µs/msg, {fmt(result['msgs_per_s'])} "
                          f"msgs/s, loadgen {result['loadgen_cpu_pct']:.0f}%", flush=True)
    print(f"\nend: {machine()}\nRabbitMQ: {pin}; medians of {args.rounds} rounds; server CPU per "
          "message delivered to (consumed by) a client\n")
    for work in works:
        print(f"### {title(work, args)}\n\n{table(raw[work])}\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    raise_fd_limit()
    sys.exit(uvloop.run(main(sys.argv[1:])))
