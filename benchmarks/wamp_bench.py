"""WAMP against wsplex's own protocols, on one wsplex server: event fan-out against chat
fan-out, RPC round trips against JSONsvc routed round trips.

    python benchmarks/wamp_bench.py [--receivers 500] [--messages 200] [--calls 2000] [--rounds 3]

* ``fanout``: one publisher and ``--receivers`` subscribers of ``bench.fanout`` in realm1
  (``wamp.2.json``), against one chat sender and as many receivers in the room ``lobby``.
  The sender sends bursts of ``--window`` messages and waits until every receiver has the
  whole burst. The figure is the **server's CPU time per delivery**.
* ``rpc``: one caller and one callee (``wamp.2.json``; CALL, INVOCATION, YIELD, RESULT),
  one call in flight, against a JSONsvc pair (``{"from":"a","to":"b"}>...`` and the answer
  back): two messages in and two out per round trip either way. The figure is the
  **server's CPU time per round trip**.

The server runs as a process of its own (psutil reads its CPU times); rounds are
interleaved (WAMP, wsplex's own, WAMP...) and the medians printed, with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
from mqtt_fanout import free_port, server
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

PROTOCOLS = "wamp.2.json,chat,JSONsvc"
ROLES: dict[str, dict[str, Any]] = {"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}}
Measure = Callable[[int, argparse.Namespace, psutil.Process], Awaitable[float]]


async def open_ws(port: int, protocol: str, name: str = "") -> ClientConnection:
    query = f"?name={name}" if name else ""
    return await connect(f"ws://127.0.0.1:{port}/{query}", subprotocols=[Subprotocol(protocol)],
                         max_size=None, compression=None)


async def wamp(port: int) -> ClientConnection:
    ws = await open_ws(port, "wamp.2.json")
    await ws.send(json.dumps([1, "realm1", {"roles": ROLES}]))
    assert json.loads(await ws.recv())[0] == 2  # WELCOME
    return ws


async def chat(port: int, name: str) -> ClientConnection:
    ws = await open_ws(port, "chat", name)
    await ws.send("/who")  # in the room once the answer comes
    while not str(await ws.recv()).startswith("* in lobby"):
        pass
    return ws


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def fan_out(receivers: list[ClientConnection], send: Callable[[int], Awaitable[None]],
                  is_delivery: Callable[[str | bytes], bool], args: argparse.Namespace,
                  process: psutil.Process) -> float:
    counts = [0] * len(receivers)
    progress = asyncio.Event()

    async def receive(index: int, ws: ClientConnection) -> None:
        while counts[index] < args.messages:
            if is_delivery(await ws.recv()):
                counts[index] += 1
                progress.set()

    tasks = [asyncio.create_task(receive(i, ws)) for i, ws in enumerate(receivers)]
    before, sent = cpu(process), 0
    while sent < args.messages:
        burst = min(args.window, args.messages - sent)
        await send(burst)
        sent += burst
        while min(counts) < sent:
            progress.clear()
            await progress.wait()
    spent: float = cpu(process) - before
    await asyncio.gather(*tasks)
    return spent / (len(receivers) * int(args.messages)) * 1e6


async def wamp_fanout(port: int, args: argparse.Namespace, process: psutil.Process) -> float:
    receivers = [await wamp(port) for _ in range(args.receivers)]
    for ws in receivers:
        await ws.send(json.dumps([32, 1, {}, "bench.fanout"]))
        assert json.loads(await ws.recv())[0] == 33  # SUBSCRIBED
    publisher = await wamp(port)
    requests = iter(range(1, 1 << 30))

    async def send(burst: int) -> None:
        for _ in range(burst):
            await publisher.send(json.dumps([16, next(requests), {}, "bench.fanout", ["x" * 32]]))

    return await fan_out(receivers, send, lambda m: str(m).startswith("[36,"), args, process)  # EVENT


async def chat_fanout(port: int, args: argparse.Namespace, process: psutil.Process) -> float:
    receivers = [await chat(port, f"r{n}") for n in range(args.receivers)]
    sender = await chat(port, "sender")

    async def send(burst: int) -> None:
        for _ in range(burst):
            await sender.send("x" * 32)

    return await fan_out(receivers, send, lambda m: str(m).startswith("[sender]"), args, process)


async def round_trips(call: Callable[[int], Awaitable[None]], args: argparse.Namespace,
                      process: psutil.Process) -> float:
    for request in range(1, 51):  # warm up
        await call(request)
    before = cpu(process)
    for request in range(51, 51 + args.calls):
        await call(request)
    spent: float = cpu(process) - before
    return spent / int(args.calls) * 1e6


async def wamp_rpc(port: int, args: argparse.Namespace, process: psutil.Process) -> float:
    callee, caller = await wamp(port), await wamp(port)
    await callee.send(json.dumps([64, 1, {}, "bench.echo"]))
    assert json.loads(await callee.recv())[0] == 65  # REGISTERED

    async def answer() -> None:
        while True:
            invocation = json.loads(await callee.recv())  # [68, request, registration, {}, args]
            await callee.send(json.dumps([70, invocation[1], {}, invocation[4]]))

    answering = asyncio.create_task(answer())

    async def call(request: int) -> None:
        await caller.send(json.dumps([48, request, {}, "bench.echo", [request]]))
        assert json.loads(await caller.recv())[0] == 50  # RESULT

    try:
        return await round_trips(call, args, process)
    finally:
        answering.cancel()


async def jsonsvc_rpc(port: int, args: argparse.Namespace, process: psutil.Process) -> float:
    asker, answerer = await open_ws(port, "JSONsvc", "a"), await open_ws(port, "JSONsvc", "b")

    async def answer() -> None:
        while True:
            message = str(await answerer.recv())
            if message.startswith('{"from":"a"'):
                await answerer.send('{"from":"b","to":"a"}>' + message[message.index(">") + 1:])

    await answerer.send('{"from":"b"}')  # the first message registers the name
    await asker.send('{"from":"a"}')
    answering = asyncio.create_task(answer())
    while True:  # until b answers: both names are registered
        await asker.send('{"from":"a","to":"b"}>0')
        try:
            if str(await asyncio.wait_for(asker.recv(), 0.2)).startswith('{"from":"b"'):
                break
        except TimeoutError:
            continue
    await asyncio.sleep(0.3)  # a benchmark driver letting stray answers of the retries arrive
    while True:
        try:
            await asyncio.wait_for(asker.recv(), 0.05)
        except TimeoutError:
            break

    async def call(request: int) -> None:
        await asker.send(f'{{"from":"a","to":"b"}}>{request}')
        while not str(await asker.recv()).startswith('{"from":"b"'):
            pass

    try:
        return await round_trips(call, args, process)
    finally:
        answering.cancel()


BENCHMARKS: dict[str, tuple[tuple[str, Measure], tuple[str, Measure]]] = {
    "fanout": (("wamp", wamp_fanout), ("chat", chat_fanout)),
    "rpc": (("wamp", wamp_rpc), ("jsonsvc", jsonsvc_rpc)),
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--receivers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=200, help="fan-out: messages per round")
    parser.add_argument("--window", type=int, default=4, help="fan-out: messages per burst")
    parser.add_argument("--calls", type=int, default=2000, help="rpc: round trips per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("benchmarks", nargs="*", default=list(BENCHMARKS))
    args = parser.parse_args()
    for name in args.benchmarks:
        results: dict[str, list[float]] = {}
        for round_number in range(args.rounds):
            for label, measure in BENCHMARKS[name]:
                port = free_port()
                argv = [sys.executable, "-m", "wsplex", "-p", str(port), "--protocols", PROTOCOLS,
                        "--no-compression", "--max-messages-per-second", "1000000"]
                with server(argv, port) as process:
                    figure = await measure(port, args, process)
                results.setdefault(label, []).append(figure)
                print(json.dumps({"benchmark": name, "protocol": label, "round": round_number + 1,
                                  "server_us": round(figure, 3)}), flush=True)
        medians: dict[str, Any] = {label: round(statistics.median(v), 3) for label, v in results.items()}
        (wamp_label, _), (own_label, _) = BENCHMARKS[name]
        medians["ratio"] = round(medians[wamp_label] / medians[own_label], 2)
        print(json.dumps({"benchmark": name, "median_of": args.rounds, **medians}), flush=True)


if __name__ == "__main__":
    started = time.perf_counter()
    asyncio.run(main())
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
