"""Memory per connection for each permessage-deflate setting (SPEC §14), measured.

    .venv/bin/python benchmarks/deflate_memory.py [--connections 1000]

For each setting it starts a fresh wsplex (``command`` protocol), opens N
connections that offer permessage-deflate as Chromium does, and has each send
one compressed ``help`` and read the compressed answer, so every zlib object a
setting keeps exists. The figure is the growth of the server's resident memory
divided by N; "idle" is the same before any message. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import zlib
from pathlib import Path

import psutil
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import free_port, wait_listening  # noqa: E402  (the harness's own helpers)

OFFER = "permessage-deflate; client_max_window_bits"
TAIL = b"\x00\x00\xff\xff"
SETTINGS: list[tuple[str, list[str]]] = [
    ("--no-compression", ["--no-compression"]),
    ("default: no context takeover", []),
    ("--compression-context-takeover (windows 15, memory level 8)", ["--compression-context-takeover"]),
    ("context takeover, windows 12, memory level 5", [
        "--compression-context-takeover", "--compression-server-window-bits", "12",
        "--compression-client-window-bits", "12", "--compression-memory-level", "5"]),
    ("context takeover, windows 9, memory level 1", [
        "--compression-context-takeover", "--compression-server-window-bits", "9",
        "--compression-client-window-bits", "9", "--compression-memory-level", "1"]),
]


class Client(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.answered = asyncio.get_running_loop().create_future()
        self.inflater = zlib.decompressobj(-15)  # one context for the connection: right either way

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT and not self.answered.done():
            payload = frame.get_payload_as_bytes()
            if frame.rsv1:
                payload = self.inflater.decompress(payload + TAIL)
            self.answered.set_result(payload)


def compressed(text: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -9)
    return (compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def measure(flags: list[str], connections: int) -> tuple[float, float, bool]:
    port = free_port()
    argv = [sys.executable, "-m", "wsplex", "--host", "127.0.0.1", "-p", str(port), "--protocols", "command",
            "--max-connections-per-ip", str(connections * 2), "--ping-interval", "0", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(proc, port)
        server = psutil.Process(proc.pid)
        url = f"ws://127.0.0.1:{port}/"
        headers = {"Sec-WebSocket-Protocol": "command", "Sec-WebSocket-Extensions": OFFER}
        clients: list[tuple[WSTransport, Client]] = []

        async def one() -> None:
            clients.append(await ws_connect(Client, url, extra_headers=headers))

        await asyncio.gather(*(one() for _ in range(20)))  # warm the server up
        await asyncio.sleep(0.5)
        before = server.memory_info().rss
        for start in range(0, connections, 200):
            await asyncio.gather(*(one() for _ in range(min(200, connections - start))))
        await asyncio.sleep(1.0)
        idle = server.memory_info().rss
        negotiated = clients[-1][0].response.headers.get("sec-websocket-extensions") is not None
        for transport, _client in clients:
            if negotiated:
                transport.send(WSMsgType.TEXT, compressed(b"help"), rsv1=True)
            else:
                transport.send(WSMsgType.TEXT, b"help")
        await asyncio.gather(*(client.answered for _, client in clients))
        await asyncio.sleep(1.0)
        after = server.memory_info().rss
        for transport, _ in clients:
            transport.disconnect()
        count = len(clients) - 20
        return (idle - before) / 1024 / count, (after - before) / 1024 / count, negotiated
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"{args.connections} connections offering `{OFFER}`\n")
    print("| setting | KiB per connection, idle | after one message each way | negotiated |")
    print("|---|---|---|---|")
    for name, flags in SETTINGS:
        idle, used, negotiated = await measure(flags, args.connections)
        print(f"| {name} | {idle:.1f} | {used:.1f} | {'yes' if negotiated else 'no'} |", flush=True)


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1:]))
