"""Subprotocol selection and refused handshakes (SPEC §1, RFC 6455 §4.2.2)."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from support import ServerFactory, ws_url
from support.rawws import RawClient
from wsplex.app.protocol import Protocol
from wsplex.app.registry import ProtocolRegistry, parse_offer

ECHO_ONLY = ("echo",)


def test_parse_offer_splits_lists_and_repeated_headers() -> None:
    assert parse_offer(["chat, echo", " JSONsvc ,,"]) == ["chat", "echo", "JSONsvc"]
    assert parse_offer([]) == []


class Alpha(Protocol):
    name = "alpha"


class Beta(Protocol):
    name = "beta"


def test_selection_rules() -> None:
    registry = ProtocolRegistry([Beta, Alpha])
    assert registry.select(["chat", "alpha", "beta"]) == "alpha"  # client's order
    assert registry.select(["chat", "alpha", "beta"], prefer="server") == "beta"
    assert registry.select(["Alpha"]) is None  # names are case-sensitive
    assert registry.select([]) is None
    assert registry.select([], default="alpha") == "alpha"
    assert registry.select(["nope"], default="alpha") is None  # default only for no offer


async def test_chosen_protocol_is_echoed_exactly_once(start_server: ServerFactory) -> None:
    server = await start_server(protocols=ECHO_ONLY)
    client = await RawClient.connect(server.port, ["nope", "echo", "echo"])
    assert client.status == 101
    headers = client.response_head.decode().lower().split("\r\n")
    assert [h for h in headers if h.startswith("sec-websocket-protocol")] == [
        "sec-websocket-protocol: echo"
    ]
    await client.close()


async def test_websockets_client_sees_the_chosen_protocol(start_server: ServerFactory) -> None:
    server = await start_server(protocols=ECHO_ONLY)
    async with connect(ws_url(server, "/ws"), subprotocols=[Subprotocol("x"), Subprotocol("echo")]) as ws:
        assert ws.subprotocol == "echo"


@pytest.mark.parametrize("offer", [None, ["chat"], ["ECHO", "Chat"]])
async def test_no_usable_offer_is_a_400_naming_the_protocols(
    start_server: ServerFactory, offer: list[str] | None
) -> None:
    server = await start_server(protocols=ECHO_ONLY)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server), subprotocols=offer):  # type: ignore[arg-type]
            pass
    response = refused.value.response
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")
    assert b"this server speaks: echo" in response.body
    assert server.stats.refusals["protocol"] == 1


async def test_default_protocol_for_clients_that_offer_none(start_server: ServerFactory) -> None:
    server = await start_server(protocols=ECHO_ONLY, default_protocol="echo")
    async with connect(ws_url(server)) as ws:
        assert ws.subprotocol is None  # nothing offered, so nothing to echo back
        await ws.send("fallback")
        assert await ws.recv() == "fallback"


async def test_upgrade_on_another_path_is_404(start_server: ServerFactory) -> None:
    server = await start_server(protocols=ECHO_ONLY)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server, "/elsewhere"), subprotocols=["echo"]):  # type: ignore[list-item]
            pass
    assert refused.value.response.status_code == 404


async def test_query_string_does_not_change_the_path(start_server: ServerFactory) -> None:
    server = await start_server(protocols=ECHO_ONLY)
    async with connect(ws_url(server, "/ws?name=x"), subprotocols=["echo"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "echo"


async def test_prefer_server_order(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), prefer="server")
    client = await RawClient.connect(server.port, ["zzz", "echo"])
    assert b"Sec-WebSocket-Protocol: echo" in client.response_head
    await client.close()
