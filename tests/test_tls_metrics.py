"""TLS on the WebSocket port (``wss://`` and ``https://``) and ``GET /metrics`` (SPEC §1, §8)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as sync_connect

from support import ServerFactory, Spawn, ws_url
from support.rawws import RawClient, frame_bytes, upgrade_request
from wsplex.ws.frames import Opcode

ECHO = [websockets.Subprotocol("echo")]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def client_context(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    return context


async def http_get(port: int, path: str, tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    client = await RawClient.open(port, tls)
    client.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    response = await client.read_response()
    await client.close()
    return response.status, response.body


async def test_wss_and_https_on_one_port(start_server: ServerFactory, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = await start_server(protocols=("echo",), tls_cert=str(cert), tls_key=str(key))
    tls = client_context(cert)
    url = f"wss://127.0.0.1:{server.port}/"
    async with connect(url, subprotocols=ECHO, ssl=tls) as ws:
        assert ws.subprotocol == "echo"
        await ws.send("over tls")
        assert await asyncio.wait_for(ws.recv(), 5) == "over tls"
        await ws.send(b"\x00" * 100_000)
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00" * 100_000
        raw = await RawClient.open(server.port, tls)  # several frames in one write: writelines()
        raw.send(upgrade_request(server.port, ["echo"]))
        assert (await raw.read_response()).status == 101
        raw.send(b"".join(frame_bytes(Opcode.TEXT, str(i).encode()) for i in range(20)))
        assert [(await raw.recv_frame()).payload for _ in range(20)] == [str(i).encode() for i in range(20)]
        for i in range(20):
            assert await asyncio.wait_for(ws.recv(), 5) == str(i)
        await raw.close()
    status, body = await http_get(server.port, "/healthz", tls)
    assert status == 200 and b'"ok"' in body


async def test_plain_connection_to_tls_port_fails_cleanly(
    start_server: ServerFactory, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server = await start_server(protocols=("echo",), tls_cert=str(cert), tls_key=str(key))
    with pytest.raises((InvalidStatus, OSError, websockets.exceptions.InvalidMessage)):
        await connect(ws_url(server), subprotocols=ECHO, open_timeout=5)
    async with connect(f"wss://127.0.0.1:{server.port}/", subprotocols=ECHO,
                       ssl=client_context(cert)) as ws:
        await ws.send("bystander")
        assert await ws.recv() == "bystander"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_what_happened(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), origins=("https://ok.example",))
    url = ws_url(server)
    # No permessage-deflate: the byte counts below are of plain frames (wire bytes either way).
    async with connect(url, subprotocols=ECHO, compression=None) as ws:
        await ws.send("hello")
        await ws.recv()
        status, body = await http_get(server.port, "/metrics")
        assert status == 200
        now = samples(body.decode())
        assert now[("wsplex_connections", (("protocol", "echo"),))] == 1
    with pytest.raises(InvalidStatus):
        await connect(url, subprotocols=ECHO, origin=websockets.Origin("https://bad.example"))
    with pytest.raises(InvalidStatus):
        await connect(url, subprotocols=[websockets.Subprotocol("nope")])
    client = await RawClient.open(server.port)
    client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await client.read_response()
    assert response.headers["content-type"].startswith("text/plain; version=")
    after = samples(response.body.decode())
    assert after[("wsplex_connections", (("protocol", "echo"),))] == 0
    assert after[("wsplex_connections_accepted_total", ())] == 1
    assert after[("wsplex_messages_received_total", ())] == 1
    assert after[("wsplex_messages_sent_total", ())] == 1
    assert after[("wsplex_received_bytes_total", ())] == 5
    assert after[("wsplex_sent_bytes_total", ())] == 7  # 2 bytes of frame header
    assert after[("wsplex_handshake_refusals_total", (("reason", "origin"),))] == 1
    assert after[("wsplex_handshake_refusals_total", (("reason", "protocol"),))] == 1
    assert after[("wsplex_closes_total", (("code", "1000"),))] == 1
    assert after[("wsplex_slow_consumer_drops_total", ())] == 0


def test_cli_serves_tls_with_an_origin_list(
    spawn: Spawn, certificate: tuple[Path, Path]
) -> None:
    """The flags as a user types them: --tls-cert, --tls-key, --origin, --max-header-size."""
    cert, key = certificate
    server = spawn("--protocols", "echo", "--tls-cert", str(cert), "--tls-key", str(key),
                   "--origin", "https://*.example.com", "--max-header-size", "2k")
    url = f"wss://127.0.0.1:{server.port}/"
    tls = client_context(cert)
    with sync_connect(url, subprotocols=ECHO, ssl=tls,
                      origin=websockets.Origin("https://app.example.com")) as ws:
        ws.send("tls")
        assert ws.recv(timeout=5) == "tls"
        for i in range(50):  # echoes coalesce into one writelines() on uvloop's TLS transport
            ws.send(str(i))
        assert [ws.recv(timeout=5) for _ in range(50)] == [str(i) for i in range(50)]
    with pytest.raises(InvalidStatus) as refused:
        sync_connect(url, subprotocols=ECHO, ssl=tls, origin=websockets.Origin("https://example.net"))
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        sync_connect(url, subprotocols=ECHO, ssl=tls, additional_headers={"X-Big": "a" * 3000})
    assert refused.value.response.status_code == 431


async def test_plain_http_obeys_the_header_limit(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_header_size=512)
    client = await RawClient.open(server.port)
    client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 600 + b"\r\n\r\n")
    assert (await client.read_response()).status == 431
    await client.close()


def test_max_header_size_flag_is_bounded_by_picows() -> None:
    from wsplex.cli import settings_from_args

    assert settings_from_args(["--max-header-size", "8k"]).max_header_size == 8192
    with pytest.raises(SystemExit):
        settings_from_args(["--max-header-size", "32k"])
