"""MQTT QoS 1 round trips of one client: wsplex's broker against Mosquitto.

    python benchmarks/mqtt_roundtrip.py [--messages 5000] [--rounds 3]

One MQTT 3.1.1 client subscribed at QoS 1 to the topic it publishes on. One
round trip: it sends a QoS 1 PUBLISH, waits for the broker's PUBACK *and* for
its own message to come back as a QoS 1 PUBLISH, and acknowledges that with a
PUBACK of its own, then sends the next: nothing is pipelined, so the figure is
latency-bound (round trips per second of wall time) next to the **server's CPU
time per round trip** (user + system, from psutil). Rounds are interleaved and
the medians printed.

The servers, the links and the Mosquitto fallback are those of
``mqtt_fanout.py``: wsplex over WebSocket on ``/mqtt``; Mosquitto over
WebSocket when its build can, else over plain TCP (Debian's 2.0.11), which
spares it the WebSocket framing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

import psutil
from mqtt_fanout import Link, Target, benchmark_targets, server

from wsplex.protocols.mqtt.codec import (
    LEVEL_311,
    Publish,
    Subscribe,
    SubscriptionRequest,
    Type,
    encode_ack,
    encode_publish,
    encode_subscribe,
)

TOPIC = "bench/roundtrip"


async def one_round_trip(link: Link, packet_id: int, packet: bytes) -> None:
    """PUBLISH out; PUBACK and the delivery in (in either order); PUBACK of the delivery out."""
    await link.send(packet)
    acked = delivered = False
    while not (acked and delivered):
        for first, body in await link.packets():
            kind = first >> 4
            if kind == Type.PUBACK and int.from_bytes(body[:2]) == packet_id:
                acked = True
            elif kind == Type.PUBLISH:
                delivered = True
                topic_length = int.from_bytes(body[:2])
                their_id = int.from_bytes(body[2 + topic_length:4 + topic_length])
                await link.send(encode_ack(LEVEL_311, Type.PUBACK, their_id))


async def round_trips(target: Target, messages: int, size: int, process: psutil.Process) -> dict[str, float]:
    link = await target.open("echoer")
    await link.send(encode_subscribe(LEVEL_311, Subscribe(1, (SubscriptionRequest(TOPIC, 1),))))
    first, _ = (await link.packets())[0]
    assert first >> 4 == Type.SUBACK
    packets = [encode_publish(LEVEL_311, Publish(TOPIC, b"x" * size, 1, packet_id=n % 65_535 + 1))
               for n in range(messages)]
    before, started = process.cpu_times(), time.perf_counter()
    for n, packet in enumerate(packets):
        await one_round_trip(link, n % 65_535 + 1, packet)
    elapsed, after = time.perf_counter() - started, process.cpu_times()
    await link.close()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"server_us_per_round_trip": round(cpu / messages * 1e6, 2),
            "round_trips_per_second": round(messages / elapsed)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=32, help="payload bytes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as config_dir:
        targets = benchmark_targets(config_dir)
        results: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
        for round_number in range(args.rounds):
            for target in targets:
                with server(target.argv, target.port) as process:
                    result = await round_trips(target, args.messages, args.size, process)
                print(json.dumps({"server": target.name, "round": round_number + 1, **result}), flush=True)
                results[target.name].append(result)
    for name, rounds in results.items():
        medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(json.dumps({"server": name, "median_of": len(rounds), **medians}))


if __name__ == "__main__":
    asyncio.run(main())
