"""``wsplex connect``: the terminal client, run as a process with its input piped (SPEC §15).

The server is a real wsplex in this test's event loop; the client is
``python -m wsplex connect`` with standard input a pipe, so it takes the
non-interactive path: each line a text message, then wait for the server to
go quiet, close with 1000 and exit.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import connect

from support import ServerFactory, free_port, ws_url

pytestmark = pytest.mark.memory_only("the client is under test; the hub behind the server is not")


@dataclass
class Finished:
    status: int
    stdout: str
    stderr: str


async def start_client(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsplex", "connect", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(proc: asyncio.subprocess.Process, given: bytes = b"") -> Finished:
    stdout, stderr = await asyncio.wait_for(proc.communicate(given), 30)
    assert proc.returncode is not None
    return Finished(proc.returncode, stdout.decode(), stderr.decode())


async def run_client(*args: str, given: bytes = b"") -> Finished:
    return await finish(await start_client(*args), given)


async def wait_connected(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    assert line.startswith("connected to "), line
    return line


async def test_lines_in_messages_out_and_a_clean_close(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo", "chat"))
    done = await run_client(ws_url(server), "--protocol", "nope", "--protocol", "echo",
                            given=b"hello\nsecond line\r\nno newline at the end")
    assert done.stdout == "hello\nsecond line\nno newline at the end\n"
    assert done.stderr.splitlines() == [f"connected to {ws_url(server)}; protocol: echo",
                                        "closed: 1000 (OK)"]
    assert done.status == 0


async def test_json_is_pretty_printed(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("command",))
    done = await run_client(ws_url(server), "--protocol", "command", "--json", "--linger", "0.2",
                            given=b"time --json\ndate\n")
    reply, _, rest = done.stdout.partition("\n}\n")
    assert json.loads(reply + "}")["timezone"] == "UTC"
    assert reply.startswith("{\n  \"")  # indented, one key a line
    assert rest.count("\n") == 1 and "(" in rest  # the date's text reply as it came
    assert done.status == 0


async def test_binary_messages_are_printed_as_hex(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    proc = await start_client(ws_url(server), "--protocol", "echo")
    await wait_connected(proc)
    async with connect(ws_url(server), subprotocols=["echo"]) as other:  # type: ignore[list-item]
        await other.send(b"\x00\xff\x10")
        assert await other.recv() == b"\x00\xff\x10"  # the fan-out has been made
    done = await finish(proc)
    assert done.stdout == "00ff10\n"
    assert done.status == 0


async def test_a_refused_handshake_shows_status_and_body(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo", "chat"))
    done = await run_client(ws_url(server), "--protocol", "mqtt-ish")
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "handshake refused: HTTP 400 Bad Request",
        "no supported protocol offered in Sec-WebSocket-Protocol; this server speaks: echo, chat"]
    assert done.status == 1


async def test_a_server_close_other_than_1000_or_1001_is_status_1(
        start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_message_size=16)
    done = await run_client(ws_url(server), "--protocol", "echo", given=b"x" * 17 + b"\n")
    assert "closed by the server: 1009 (message too big)" in done.stderr
    assert done.status == 1


async def test_server_shutdown_1001_is_status_0(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    proc = await start_client(ws_url(server), "--protocol", "echo")
    await wait_connected(proc)
    await server.stop()  # input still open: the server's close ends the client
    assert proc.stdin is not None
    done = await finish(proc)
    assert "closed by the server: 1001 (going away)" in done.stderr
    assert done.status == 0


async def test_nothing_listening_is_status_1() -> None:
    done = await run_client(f"ws://127.0.0.1:{free_port()}/", "--protocol", "echo")
    assert done.stderr.startswith("cannot connect to ")
    assert done.status == 1


async def test_help_names_the_linger() -> None:
    done = await run_client("--help")
    assert "--linger S" in done.stdout and "--protocol NAME" in done.stdout
    assert done.status == 0


def test_the_server_help_names_the_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "wsplex", "--help"], capture_output=True,
                            text=True, timeout=30)
    assert "wsplex connect URL --protocol NAME" in " ".join(result.stdout.split())
    assert "wsplex hash-password" in result.stdout
