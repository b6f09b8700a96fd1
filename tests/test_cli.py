"""The ``wsplex`` command as a user runs it: flags, logging, HTTP, signals (SPEC §1, §8)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support import Spawn, WsplexProcess, free_port

TESTS = str(Path(__file__).parent)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wsplex", *args], capture_output=True,
                          text=True, timeout=30)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_help_explains_every_flag() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ["--host", "--port", "-p", "--debug", "--protocols", "--prefer",
                 "--default-protocol", "--ping-interval", "--ping-timeout",
                 "--max-message-size", "--protocol-module"]:
        assert flag in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["-p", "abc"], ["-p", "70000"], ["--ping-interval", "-1"], ["--ping-timeout", "soon"],
        ["--protocols", "echo,nope"], ["--protocols", ""], ["--max-message-size", "0"],
        ["--max-message-size", "big"], ["--prefer", "nobody"], ["--default-protocol", "chat",
                                                                 "--protocols", "echo"],
        ["--protocol-module", "no_such_module:Thing"], ["--protocol-module", "support.sample_protocols"],
        ["--protocol-module", "support.sample_protocols:NotAProtocol"], ["--no-such-flag"],
    ],
)
def test_bad_flag_values_are_one_line_and_status_2(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "wsplex", *args], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "PYTHONPATH": TESTS})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsplex: error:"), result.stderr


def test_port_glued_to_the_flag(spawn: Spawn) -> None:
    port = free_port()
    child = spawn(f"-p{port}", "--protocols", "echo", port=port)
    status, _, _ = get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200
    assert child.proc.poll() is None


def test_default_port_is_12352(spawn: Spawn) -> None:
    argv = [sys.executable, "-m", "wsplex", "--protocols", "echo"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    child = WsplexProcess(proc, 12352)
    try:
        line = child.read_until("listening on")
        assert ":12352" in line and "0.0.0.0" in line
        status, _, body = get("http://127.0.0.1:12352/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
    finally:
        assert child.stop() == 0


def test_console_script_is_installed(spawn: Spawn) -> None:
    exe = shutil.which("wsplex", path=str(Path(sys.executable).parent))
    assert exe is not None
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("wsplex ")


def test_debug_logs_connections_and_closes(spawn: Spawn) -> None:
    child = spawn("-d", "--protocols", "echo")

    async def session() -> None:
        async with connect(child.url, subprotocols=["nope", "echo"]) as ws:  # type: ignore[list-item]
            await ws.send("x")
            await ws.recv()
            await ws.close(4000, "done here")

    asyncio.run(session())
    line = child.read_until(r"connect \S+ from 127\.0\.0\.1:\d+")
    assert "offered=nope,echo" in line and "chose=echo" in line
    closed = child.read_until(r"close \S+ code=")
    assert "code=4000" in closed and "done here" in closed


def test_sigterm_closes_clients_with_1001_and_exits(spawn: Spawn) -> None:
    child = spawn("--protocols", "echo")

    async def session() -> int | None:
        async with connect(child.url, subprotocols=["echo"]) as ws:  # type: ignore[list-item]
            await ws.send("x")
            await ws.recv()
            child.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert asyncio.run(session()) == 1001
    assert child.proc.wait(10) == 0


def test_sigint_also_shuts_down_gracefully(spawn: Spawn) -> None:
    child = spawn("--protocols", "echo")
    assert child.stop(signal.SIGINT, timeout=10) == 0


def test_http_routes(spawn: Spawn) -> None:
    child = spawn("--protocols", "echo")
    status, headers, body = get(child.http + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<html" in body.lower()
    status, headers, body = get(child.http + "/protocols")
    assert status == 200 and headers["Content-Type"] == "application/json"
    table = json.loads(body)["protocols"]
    assert [p["name"] for p in table] == ["echo"]
    assert table[0]["description"] and table[0]["help"]
    status, _, body = get(child.http + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert get(child.http + "/nope")[0] == 404
    assert get(child.http + "/static/../../etc/passwd")[0] == 404
    request = urllib.request.Request(child.http + "/", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400


def test_protocol_module_from_outside_the_package(spawn: Spawn) -> None:
    child = spawn("--protocols", "echo", "--protocol-module", "support.sample_protocols:Shout",
                  env={"PYTHONPATH": TESTS})
    _, _, body = get(child.http + "/protocols")
    assert [p["name"] for p in json.loads(body)["protocols"]] == ["echo", "shout"]

    async def session() -> str | bytes:
        async with connect(child.url, subprotocols=["shout"]) as ws:  # type: ignore[list-item]
            await ws.send("quiet please")
            return await ws.recv()

    assert asyncio.run(session()) == "1: QUIET PLEASE"  # the sender, as a shout client sees it
