"""The handshake decision, status by status, without a socket (RFC 6455 §4.2, SPEC §1, §8, §11)."""

from __future__ import annotations

from dataclasses import replace
from http import HTTPStatus

import pytest

from support.sample_protocols import Fragile
from wsplex.app.registry import ProtocolRegistry
from wsplex.config import Settings
from wsplex.http.admission import Refusal, Refused
from wsplex.http.handshake import (
    Accept,
    Request,
    Route,
    client_address,
    decide,
    format_peer,
    refusal_response,
)

PEER = ("192.0.2.7", 50000)
SETTINGS = Settings(protocols=("echo", "chat"))
REGISTRY = ProtocolRegistry.build(("echo", "chat"))


def upgrade(target: str = "/", *extra: tuple[str, str], version: str | None = "13") -> Request:
    headers = [("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
    if version is not None:
        headers.append(("Sec-WebSocket-Version", version))
    return Request(b"GET", target.encode(), b"HTTP/1.1", [*headers, *extra], PEER)


def offer(*names: str) -> tuple[str, str]:
    return ("Sec-WebSocket-Protocol", ", ".join(names))


def refused(decision: object, status: HTTPStatus, reason: Refusal) -> Refused:
    assert isinstance(decision, Refused), decision
    assert (decision.status, decision.reason) == (status, reason)
    return decision


def test_accept_echoes_the_first_offer_the_server_has() -> None:
    decision = decide(upgrade("/?name=alice&x=1", offer("nope", "chat", "echo")), SETTINGS, REGISTRY)
    assert decision == Accept("chat", "chat", "/", "name=alice&x=1", ("nope", "chat", "echo"),
                              "192.0.2.7", "192.0.2.7:50000")


def test_server_preference_picks_from_the_servers_order() -> None:
    settings = replace(SETTINGS, prefer="server")
    decision = decide(upgrade("/", offer("chat", "echo")), settings, REGISTRY)
    assert isinstance(decision, Accept) and decision.subprotocol == "echo"


def test_offers_in_several_header_lines_are_one_list() -> None:
    """RFC 6455 §4.1: the header may appear more than once."""
    decision = decide(upgrade("/", offer("nope"), offer("echo")), SETTINGS, REGISTRY)
    assert isinstance(decision, Accept) and decision.offered == ("nope", "echo")


def test_default_protocol_is_not_echoed() -> None:
    """RFC 6455 §4.2.2: a server must not name a protocol the client did not offer."""
    settings = replace(SETTINGS, default_protocol="echo")
    decision = decide(upgrade("/"), settings, REGISTRY)
    assert isinstance(decision, Accept)
    assert (decision.protocol, decision.subprotocol) == ("echo", None)


def test_default_protocol_does_not_cover_a_bad_offer() -> None:
    settings = replace(SETTINGS, default_protocol="echo")
    decision = decide(upgrade("/", offer("nope")), settings, REGISTRY)
    refused(decision, HTTPStatus.BAD_REQUEST, Refusal.PROTOCOL)


@pytest.mark.parametrize("offered", [(), ("nope",)])
def test_no_usable_offer_is_400_naming_the_protocols(offered: tuple[str, ...]) -> None:
    extra = (offer(*offered),) if offered else ()
    decision = refused(decide(upgrade("/", *extra), SETTINGS, REGISTRY), HTTPStatus.BAD_REQUEST,
                       Refusal.PROTOCOL)
    assert decision.text.endswith("this server speaks: echo, chat")
    assert decision.text.startswith("no supported protocol" if offered else "no protocol")


def test_plain_get_is_for_the_routes() -> None:
    request = Request(b"GET", b"/protocols?x=1", b"HTTP/1.1", [("Host", "x")], PEER)
    assert decide(request, SETTINGS, REGISTRY) == Route("/protocols?x=1")


@pytest.mark.parametrize("path", ["/", "/ws"])
def test_websocket_paths_take_every_protocol(path: str) -> None:
    assert isinstance(decide(upgrade(path, offer("echo")), SETTINGS, REGISTRY), Accept)


def test_unknown_path_is_404() -> None:
    decision = refused(decide(upgrade("/nowhere", offer("echo")), SETTINGS, REGISTRY),
                       HTTPStatus.NOT_FOUND, Refusal.PATH)
    assert decision.text == "no WebSocket endpoint at /nowhere"


def test_mqtt_path_is_for_mqtt_only() -> None:
    """SPEC §11: MQTT clients connect to /mqtt by default."""
    refused(decide(upgrade("/mqtt", offer("echo")), SETTINGS, REGISTRY), HTTPStatus.NOT_FOUND, Refusal.PATH)
    mqtt = type("Mqtt", (Fragile,), {"name": "mqtt"})
    registry = ProtocolRegistry([mqtt])
    decision = decide(upgrade("/mqtt", offer("mqtt")), SETTINGS, registry)
    assert isinstance(decision, Accept) and (decision.path, decision.subprotocol) == ("/mqtt", "mqtt")


@pytest.mark.parametrize("version", [None, "8", "14"])
def test_other_versions_get_426_naming_13(version: str | None) -> None:
    """RFC 6455 §4.2.2: answer with the version the server speaks."""
    decision = refused(decide(upgrade("/", offer("echo"), version=version), SETTINGS, REGISTRY),
                       HTTPStatus.UPGRADE_REQUIRED, Refusal.VERSION)
    assert decision.headers == (("Sec-WebSocket-Version", "13"),)
    response = refusal_response(decision)
    assert response.status == 426 and response.headers == {"Sec-WebSocket-Version": "13"}
    assert response.body == f"unsupported Sec-WebSocket-Version {version}; this server speaks 13\n".encode()


def test_origin_outside_the_allow_list_is_403() -> None:
    settings = replace(SETTINGS, origins=("https://*.example.org",))
    ok = decide(upgrade("/", offer("echo"), ("Origin", "https://app.example.org")), settings, REGISTRY)
    assert isinstance(ok, Accept)
    evil = upgrade("/", offer("echo"), ("origin", "https://evil.test"))
    decision = refused(decide(evil, settings, REGISTRY), HTTPStatus.FORBIDDEN, Refusal.ORIGIN)
    assert decision.text == "origin https://evil.test is not allowed"
    no_origin = upgrade("/", offer("echo"))  # not a browser: it could forge any origin anyway
    assert isinstance(decide(no_origin, settings, REGISTRY), Accept)


def test_headers_over_the_limit_are_431() -> None:
    settings = replace(SETTINGS, max_header_size=200)
    assert isinstance(decide(upgrade("/", offer("echo")), settings, REGISTRY), Accept)
    big = upgrade("/", offer("echo"), ("X-Padding", "x" * 100))
    decision = refused(decide(big, settings, REGISTRY), HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                       Refusal.HEADER_SIZE)
    assert decision.text == "request headers larger than 200 bytes"


def test_header_names_are_case_insensitive() -> None:
    request = Request(b"GET", b"/", b"HTTP/1.1",
                      [("upgrade", "WebSocket"), ("sec-websocket-version", "13"),
                       ("SEC-WEBSOCKET-PROTOCOL", "echo")], PEER)
    assert isinstance(decide(request, SETTINGS, REGISTRY), Accept)


def test_refusal_response_is_plain_text() -> None:
    response = refusal_response(Refused(HTTPStatus.SERVICE_UNAVAILABLE, Refusal.MAX_CONNECTIONS, "full"))
    assert (response.status, response.body, response.content_type) == (
        503, b"full\n", "text/plain; charset=utf-8")


def test_peer_addresses() -> None:
    assert (client_address(PEER), format_peer(PEER)) == ("192.0.2.7", "192.0.2.7:50000")
    assert format_peer(("::1", 80, 0, 0)) == "[::1]:80"
    assert client_address(None) == format_peer(None) == "unknown"
