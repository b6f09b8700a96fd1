"""``--log-format json`` and ``--log-level``: the server's stderr, parsed (SPEC §15)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support import Spawn, WsplexProcess
from wsplex.logs import configure


def json_line(child: WsplexProcess, pattern: str) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(child.read_until(pattern))
    return line


async def talk(url: str) -> None:
    async with connect(url, subprotocols=["echo"]) as ws:  # type: ignore[list-item]
        await ws.send("x")
        await ws.recv()
    with pytest.raises(InvalidStatus):
        async with connect(url, subprotocols=["nope"]):  # type: ignore[list-item]
            pass


def test_json_lines_carry_the_connection(spawn: Spawn) -> None:
    child = spawn("--log-format", "json", "--log-level", "debug", "--protocols", "echo")
    started = json.loads(child.lines[-1])
    assert started["level"] == "info" and started["logger"] == "wsplex.server"
    assert "listening on" in started["message"] and started["time"].endswith("Z")
    asyncio.run(talk(child.url))
    connected = json_line(child, r'"message": "connect ')
    assert connected["protocol"] == "echo" and connected["level"] == "debug"
    assert connected["remote"].startswith("127.0.0.1:") and connected["conn"]
    closed = json_line(child, r'"message": "close ')
    assert closed["conn"] == connected["conn"] and closed["remote"] == connected["remote"]
    refused = json_line(child, r'"status": 400')
    assert (refused["level"], refused["path"]) == ("info", "/")
    assert "no supported protocol offered" in refused["message"]
    with urllib.request.urlopen(child.http + "/healthz?probe=1", timeout=10) as response:
        assert response.status == 200
    served = json_line(child, r'"path": "/healthz\?probe=1"')
    assert (served["status"], served["level"]) == (200, "info")
    assert served["message"].endswith("GET /healthz?probe=1 200")


def test_text_lines_and_the_debug_level(spawn: Spawn) -> None:
    child = spawn("--log-level", "debug", "--protocols", "echo")
    asyncio.run(talk(child.url))
    assert " DEBUG wsplex.server: " in child.read_until(r"connect \S+ from 127\.0\.0\.1:")
    assert " INFO " in child.read_until(r"GET / 400 refused: no supported protocol")


@pytest.mark.parametrize(("level", "debug", "expected"), [
    ("warning", False, logging.WARNING), ("error", False, logging.ERROR),
    ("info", False, logging.INFO), ("warning", True, logging.DEBUG)])
def test_levels(level: str, debug: bool, expected: int) -> None:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        configure(level, "text", debug)
        assert root.level == expected
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_a_handshake_timeout_is_logged_at_info(spawn: Spawn) -> None:
    child = spawn("--log-format", "json", "--handshake-timeout", "0.2", "--protocols", "echo")
    with socket.create_connection(("127.0.0.1", child.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        timed_out = json_line(child, r'"status": 408')
        assert timed_out["level"] == "info" and timed_out["remote"].startswith("127.0.0.1:")
