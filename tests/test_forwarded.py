"""``--trusted-proxy``: the client address behind a proxy (X-Forwarded-For, RFC 7239 Forwarded).

The address is part of the pure handshake decision, tested here without
sockets; the last tests check over real sockets that limits and ``clients``
use it.
"""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support import ServerFactory, ws_url
from wsplex.app.registry import ProtocolRegistry
from wsplex.config import BadValue, Settings, network
from wsplex.http.handshake import Accept, Request, decide

REGISTRY = ProtocolRegistry.build(("echo",))
PROXIES = ("10.0.0.0/8", "2001:db8::/32")


def accept(peer: tuple[str | int, ...], *headers: tuple[str, str],
           proxies: tuple[str, ...] = PROXIES) -> Accept:
    request = Request(b"GET", b"/", b"HTTP/1.1", [
        ("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "echo"), *headers], peer)
    decision = decide(request, Settings(protocols=("echo",), trusted_proxies=proxies), REGISTRY)
    assert isinstance(decision, Accept)
    return decision


def address(peer: tuple[str | int, ...], *headers: tuple[str, str],
            proxies: tuple[str, ...] = PROXIES) -> str:
    decision = accept(peer, *headers, proxies=proxies)
    return decision.address


PROXY = ("10.1.2.3", 40000)
STRANGER = ("192.0.2.7", 50000)


def test_a_trusted_proxy_names_the_client() -> None:
    decision = accept(PROXY, ("X-Forwarded-For", "203.0.113.9"))
    assert (decision.address, decision.remote) == ("203.0.113.9", "203.0.113.9")


def test_headers_from_anyone_else_are_ignored() -> None:
    decision = accept(STRANGER, ("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=1.2.3.4"))
    assert (decision.address, decision.remote) == ("192.0.2.7", "192.0.2.7:50000")


def test_without_trusted_proxies_nobody_is_believed() -> None:
    assert address(PROXY, ("X-Forwarded-For", "203.0.113.9"), proxies=()) == "10.1.2.3"


def test_the_last_untrusted_hop_is_the_client() -> None:
    # The client wrote "6.6.6.6" itself; 203.0.113.9 reached our proxies, which appended it.
    hops = "6.6.6.6, 203.0.113.9, 10.9.9.9"
    assert address(PROXY, ("X-Forwarded-For", hops)) == "203.0.113.9"
    # Several header lines are one list, in order.
    assert address(PROXY, ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9")) == (
        "203.0.113.9")


def test_when_every_hop_is_a_proxy_the_leftmost_is_the_client() -> None:
    assert address(PROXY, ("X-Forwarded-For", "10.0.0.5, 10.0.0.6")) == "10.0.0.5"


def test_a_hop_that_is_no_address_ends_the_walk() -> None:
    assert address(PROXY, ("X-Forwarded-For", "garbage")) == "10.1.2.3"
    assert address(PROXY, ("X-Forwarded-For", "203.0.113.9, unknown, 10.0.0.6")) == "10.0.0.6"
    assert address(PROXY, ("X-Forwarded-For", "")) == "10.1.2.3"


def test_forwarded_rfc_7239() -> None:
    assert address(PROXY, ("Forwarded", 'for=192.0.2.60;proto=http;by=203.0.113.43')) == "192.0.2.60"
    assert address(PROXY, ("Forwarded", 'for="[2001:db8:cafe::17]:4711"')) == "2001:db8:cafe::17"
    assert address(PROXY, ("Forwarded", "for=198.51.100.1, for=10.0.0.2")) == "198.51.100.1"
    assert address(PROXY, ("Forwarded", 'For="198.51.100.1:80"')) == "198.51.100.1"
    assert address(PROXY, ("Forwarded", "for=_hidden")) == "10.1.2.3"
    assert address(PROXY, ("Forwarded", "proto=https")) == "10.1.2.3"


def test_x_forwarded_for_wins_over_forwarded() -> None:
    assert address(PROXY, ("Forwarded", "for=198.51.100.1"),
                   ("X-Forwarded-For", "203.0.113.9")) == "203.0.113.9"


def test_ipv6_proxies_and_mapped_addresses() -> None:
    assert address(("2001:db8::1", 443, 0, 0), ("X-Forwarded-For", "2001:db9::5")) == "2001:db9::5"
    assert address(PROXY, ("X-Forwarded-For", "::ffff:203.0.113.9")) == "203.0.113.9"
    assert address(("::ffff:10.1.2.3", 443, 0, 0), ("X-Forwarded-For", "203.0.113.9")) == (
        "203.0.113.9")


def test_the_setting_takes_cidrs_and_single_addresses() -> None:
    assert network("10.0.0.0/8") == "10.0.0.0/8"
    assert network("127.0.0.1") == "127.0.0.1/32"
    assert network("10.1.2.3/8") == "10.0.0.0/8"
    with pytest.raises(BadValue, match="invalid address or CIDR"):
        network("example.com")


# -- over real sockets ----------------------------------------------------------------


def via(forwarded_for: str) -> dict[str, str]:
    return {"X-Forwarded-For": forwarded_for}


async def test_limits_and_clients_use_the_forwarded_address(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo", "command"), trusted_proxies=("127.0.0.1",),
                                max_connections_per_ip=1, admin_token="tok")
    url = ws_url(server)
    async with (connect(url, subprotocols=["echo"],  # type: ignore[list-item]
                        additional_headers=via("6.6.6.6, 203.0.113.9")),
                connect(url, subprotocols=["command"],  # type: ignore[list-item]
                        additional_headers=via("198.51.100.4")) as operator):
        with pytest.raises(InvalidStatus) as refused:  # one per address: 203.0.113.9 has one
            async with connect(url, subprotocols=["echo"],  # type: ignore[list-item]
                               additional_headers=via("203.0.113.9")):
                pass
        assert refused.value.response.status_code == 503
        assert b"too many connections from 203.0.113.9" in refused.value.response.body
        await operator.send("auth tok")
        assert await operator.recv() == "ok: authenticated"
        await operator.send("clients --json")
        reply = json.loads(await operator.recv())
        remotes = {client["protocol"]: client["remote"] for client in reply["clients"]}
        assert remotes == {"echo": "203.0.113.9", "command": "198.51.100.4"}


async def test_the_auth_throttle_counts_the_forwarded_address(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("command",), trusted_proxies=("127.0.0.1",),
                                admin_token="tok")
    url = ws_url(server)
    async with (connect(url, subprotocols=["command"],  # type: ignore[list-item]
                        additional_headers=via("203.0.113.9")) as guesser,
                connect(url, subprotocols=["command"],  # type: ignore[list-item]
                        additional_headers=via("198.51.100.4")) as operator):
        for _ in range(5):
            await guesser.send("auth wrong")
            assert await guesser.recv() == "error: wrong token"
        await guesser.send("auth tok")
        assert str(await guesser.recv()).startswith("error: too many failed auth attempts")
        await operator.send("auth tok")  # another client behind the same proxy is not locked out
        assert await operator.recv() == "ok: authenticated"
