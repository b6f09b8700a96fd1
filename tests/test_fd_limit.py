"""Running out of file descriptors is never silent (issue 17 item 9): the connection
cap follows the open-files limit, so a client past it gets 503 "server full" (as
tests/test_limits.py shows for --max-connections) instead of a dropped accept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from support import WsplexProcess, free_port, http_get
from wsplex.http.admission import HANDSHAKE_SPARE
from wsplex.server import FD_HEADROOM, connection_cap

ECHO = [Subprotocol("echo")]

pytestmark = pytest.mark.memory_only("a process limit: no hub involved")


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    """This process's open-files limits; the soft one is lowered to 96 for the test
    (opening nothing) and put back after. The hard one is never touched: lowering it
    cannot be undone without privileges."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))
    try:
        yield 96, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_first(limits: tuple[int, int]) -> None:
    assert connection_cap(200) == 200
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 200 + FD_HEADROOM


def test_the_cap_follows_the_hard_limit(limits: tuple[int, int], caplog: pytest.LogCaptureFixture) -> None:
    _, hard = limits
    if hard == resource.RLIM_INFINITY:  # nothing caps the soft limit: the cap is as asked
        assert connection_cap(1_000_000) == 1_000_000
        assert caplog.text == ""
        return
    with caplog.at_level(logging.WARNING, logger="wsplex.server"):
        assert connection_cap(hard + 1000) == hard - FD_HEADROOM
    assert f"serving at most {hard - FD_HEADROOM} connections" in caplog.text
    caplog.clear()
    assert connection_cap(10) == 10  # within the limit: as asked, no warning
    assert caplog.text == ""


async def test_a_server_at_its_file_limit_answers_503_and_closes_half_open_ones() -> None:
    """End to end, in a ``wsplex`` process started with 128 open files: the cap is what
    the limit allows, a client past it gets 503 "server full" (not a dropped accept),
    ``/healthz`` still answers, and half-open connections past the cap plus
    HANDSHAKE_SPARE are closed at once, with a log line, before descriptors run out."""
    port = free_port()
    argv = [sys.executable, "-m", "wsplex", "--host", "127.0.0.1", "-p", str(port), "--protocols", "echo"]
    proc = subprocess.Popen(  # the hard limit too: wsplex raises its soft limit up to it
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128)))
    child = WsplexProcess(proc, port)
    try:
        await limited(child)
    finally:
        child.stop(signal.SIGKILL)


async def limited(child: WsplexProcess) -> None:
    cap = 128 - FD_HEADROOM
    child.read_until(f"serving at most {cap} connections")
    child.read_until("listening on")
    clients = [await connect(child.url, subprotocols=ECHO) for _ in range(cap)]
    idle: list[asyncio.StreamWriter] = []
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(child.url, subprotocols=ECHO)
        assert refused.value.response.status_code == 503
        assert b"server full" in refused.value.response.body
        assert (await http_get(f"{child.http}/healthz"))[0] == 200

        for _ in range(HANDSHAKE_SPARE):
            idle.append((await asyncio.open_connection("127.0.0.1", child.port))[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", child.port)
        idle.append(writer)
        with contextlib.suppress(ConnectionResetError):  # closed at once: RST, or FIN
            assert await asyncio.wait_for(reader.read(1), 10) == b""
        child.read_until("TCP connection closed at once")
        await clients[0].send("the open ones carry on")
        assert await asyncio.wait_for(clients[0].recv(), 10) == "the open ones carry on"
    finally:
        for writer in idle:
            writer.close()
        for client in clients:
            await client.close()
    assert (await http_get(f"{child.http}/healthz"))[0] == 200
