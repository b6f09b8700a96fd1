"""Running wsplex for real (SPEC §15): draining on shutdown, SIGHUP reloads."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import ssl
from pathlib import Path

import pytest
from websockets import Subprotocol
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from support import Spawn
from support.processes import WsplexProcess
from support.rawws import RawClient
from support.stomp import RawStomp
from support.tls import make_certificate
from wsplex.app.users import hash_password

ECHO = [Subprotocol("echo")]
TIMEOUT = 15.0


async def healthz(port: int, tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, str]]:
    client = await RawClient.open(port, tls)
    client.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    response = await client.read_response()
    await client.close()
    return response.status, json.loads(response.body)


async def read_until(child: WsplexProcess, pattern: str) -> str:
    """The child's next log line matching ``pattern``, read without blocking the loop."""
    return await asyncio.to_thread(child.read_until, pattern)


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; the code it sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def echoes(ws: ClientConnection, text: str) -> bool:
    """``text`` comes back (echo sends every message to every echo client: skip theirs)."""
    await ws.send(text)
    while (got := await asyncio.wait_for(ws.recv(), TIMEOUT)) != text:
        pass
    return got == text


# -- --drain-seconds ------------------------------------------------------------------------


async def test_draining_answers_503_and_keeps_open_connections(spawn: Spawn) -> None:
    child = spawn("--protocols", "echo", "--drain-seconds", "600")
    async with connect(child.url, subprotocols=ECHO) as ws:
        assert await echoes(ws, "before")
        assert (await healthz(child.port))[0] == 200
        child.proc.send_signal(signal.SIGTERM)
        assert "1 open connections" in await read_until(child, "draining for 600 s")
        status, body = await healthz(child.port)
        assert (status, body["status"]) == (503, "draining")
        with pytest.raises(InvalidStatus) as refused:
            await connect(child.url, subprotocols=ECHO)
        assert refused.value.response.status_code == 503
        assert b"draining" in refused.value.response.body
        assert await echoes(ws, "still served while draining")
        child.proc.send_signal(signal.SIGTERM)  # a second signal ends the drain at once
        assert await close_code(ws) == 1001
    assert child.proc.wait(TIMEOUT) == 0
    assert "503" in await read_until(child, "GET /healthz 503")


async def test_clients_get_1001_when_the_drain_is_over(spawn: Spawn) -> None:
    child = spawn("--protocols", "echo", "--drain-seconds", "0.5")
    async with connect(child.url, subprotocols=ECHO) as ws:
        assert await echoes(ws, "x")
        child.proc.send_signal(signal.SIGTERM)
        await read_until(child, "draining for 0.5 s")
        assert await close_code(ws) == 1001
    assert child.proc.wait(TIMEOUT) == 0


# -- SIGHUP ---------------------------------------------------------------------------------


def served_certificate(ws: ClientConnection) -> bytes:
    ssl_object = ws.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    assert isinstance(der, bytes)
    return der


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


async def test_sighup_reloads_the_certificate_without_dropping_connections(
    spawn: Spawn, tmp_path: Path
) -> None:
    old_cert, old_key = make_certificate(tmp_path, "old")
    new_cert, new_key = make_certificate(tmp_path, "new")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(old_cert, cert)
    shutil.copy(old_key, key)
    child = spawn("--protocols", "echo", "--tls-cert", str(cert), "--tls-key", str(key))
    trust = ssl.create_default_context(cafile=str(old_cert))
    trust.load_verify_locations(cafile=str(new_cert))
    url = f"wss://127.0.0.1:{child.port}/"
    async with connect(url, subprotocols=ECHO, ssl=trust) as before:
        assert served_certificate(before) == der(old_cert)
        shutil.copy(new_cert, cert)  # a renewal: new files under the old names
        shutil.copy(new_key, key)
        child.proc.send_signal(signal.SIGHUP)
        await read_until(child, "SIGHUP: reloaded the TLS certificate")
        async with connect(url, subprotocols=ECHO, ssl=trust) as after:
            assert served_certificate(after) == der(new_cert)
            assert await echoes(after, "new certificate")
        assert await echoes(before, "the old connection stays")
        cert.write_text("not a certificate\n")
        child.proc.send_signal(signal.SIGHUP)
        assert "keeping the old one" in await read_until(child, "cannot reload the TLS certificate")
        async with connect(url, subprotocols=ECHO, ssl=trust) as later:
            assert served_certificate(later) == der(new_cert)
        assert (await healthz(child.port, trust))[0] == 200
        assert await echoes(before, "still there")


async def stomp_login(child: WsplexProcess, login: str, passcode: str) -> str:
    """CONNECT with credentials: the command of the server's answer (CONNECTED or ERROR)."""
    ws = await connect(child.url, subprotocols=[Subprotocol("v12.stomp")])
    raw = RawStomp(ws)
    await raw.frame("CONNECT", {"accept-version": "1.2", "host": "test", "login": login,
                                "passcode": passcode})
    reply = (await raw.next()).command
    await raw.close()
    return reply


async def test_sighup_reloads_the_users_file(spawn: Spawn, tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(f'[users]\nalice = "{hash_password("one", n=16, r=1, p=1)}"\n')
    child = spawn("--protocols", "v12.stomp", "--users", str(users))
    assert await stomp_login(child, "alice", "one") == "CONNECTED"
    assert await stomp_login(child, "bob", "two") == "ERROR"
    users.write_text(f'[users]\nbob = "{hash_password("two", n=16, r=1, p=1)}"\n')
    child.proc.send_signal(signal.SIGHUP)
    assert "(1 users)" in await read_until(child, "SIGHUP: reloaded --users")
    assert await stomp_login(child, "bob", "two") == "CONNECTED"
    assert await stomp_login(child, "alice", "one") == "ERROR"
    users.write_text("[users]\nbob = 42\n")
    child.proc.send_signal(signal.SIGHUP)
    assert "keeping the old users" in await read_until(child, "SIGHUP: cannot reload --users")
    assert await stomp_login(child, "bob", "two") == "CONNECTED"


# -- --workers: the parent passes the signals on ----------------------------------------------


async def test_workers_drain_and_reload_together(spawn: Spawn, clean_redis: str,
                                                 tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(f'[users]\nalice = "{hash_password("one", n=16, r=1, p=1)}"\n')
    child = spawn("--protocols", "echo,v12.stomp", "--redis", clean_redis, "--workers", "2",
                  "--users", str(users), "--drain-seconds", "600")
    await read_until(child, "listening on")  # the second worker (spawn waited for the first)
    child.proc.send_signal(signal.SIGHUP)
    for _ in range(2):
        await read_until(child, "SIGHUP: reloaded --users")
    async with connect(child.url, subprotocols=ECHO) as ws:
        assert await echoes(ws, "x")
        child.proc.send_signal(signal.SIGTERM)
        for _ in range(2):
            await read_until(child, "draining for 600 s")
        assert await echoes(ws, "served while draining")
        child.proc.send_signal(signal.SIGTERM)  # passed on: the drain ends
        assert await close_code(ws) == 1001
    assert child.proc.wait(TIMEOUT) == 0
