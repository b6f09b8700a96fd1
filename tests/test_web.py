"""The browser console at ``/`` (SPEC §6), driven in real headless Chromium.

Chromium comes from Debian's packages (``scripts/test.sh`` installs it);
Playwright only drives it (its own browser download is not used). Controls
are found by their visible labels, as a person or a screen reader finds them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from support import ServerFactory, Spawn, ws_url
from wsplex.server import Server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: ``WSPLEX_SCREENSHOT=docs/console.png`` makes the screenshot test write the README's picture.
SCREENSHOT_ENV = "WSPLEX_SCREENSHOT"
ALL_PROTOCOLS = ("echo", "chat", "command", "JSONsvc")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does it)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@dataclass
class Console:
    """One browser tab on the console, with every console error it printed and every URL it asked for."""

    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    async def connect(self, protocols: str, expect_chosen: str | None = None, name: str = "") -> None:
        await self.page.get_by_label("Protocol").fill(protocols)
        if name:
            await self.page.get_by_label("Name").fill(name)
        await self.page.get_by_role("button", name="Connect", exact=True).click()
        if expect_chosen is not None:
            await expect(self.page.get_by_test_id("chosen-protocol")).to_have_text(expect_chosen)
            await expect(self.page.get_by_test_id("state")).to_have_text(re.compile("open"))

    async def send(self, text: str) -> None:
        await self.page.get_by_label("Message").fill(text)
        await self.page.get_by_label("Message").press("Enter")

    async def expect_line(self, direction: str, text: str | re.Pattern[str]) -> None:
        lines = self.page.get_by_role("log").locator(f".line[data-direction={direction}]")
        await expect(lines.filter(has_text=text).last).to_be_visible()


OpenConsole = Callable[[str], Awaitable[Console]]


@pytest.fixture
def open_console(browser: Browser) -> OpenConsole:
    """Open the console of the server at ``http_url`` in a fresh browser context (its own tab)."""

    async def open_page(http_url: str) -> Console:
        context = await browser.new_context(viewport={"width": 1000, "height": 760})
        page = await context.new_page()
        console = Console(page)
        page.on("console", lambda m: _record(console, m))
        page.on("pageerror", lambda exc: console.errors.append(f"page error: {exc}"))
        page.on("request", lambda request: console.requests.append(request.url))
        response = await page.goto(http_url)
        assert response is not None and response.ok
        # The picker is filled from /protocols once the page has loaded it.
        await expect(page.locator("#protocol-choices li").first).to_be_attached()
        return console

    return open_page


def _record(console: Console, message: ConsoleMessage) -> None:
    if message.type == "error":
        console.errors.append(message.text)


async def expect_controls_findable(page: Page, connected: bool) -> None:
    """Each control is the only match for its name, even by substring (Playwright's default).

    "Connect" is a substring of "Disconnect", so only one of the two is shown at a time.
    """
    for label in ("Host", "Protocol", "Name", "Message"):
        await expect(page.get_by_label(label)).to_have_count(1)
        await expect(page.get_by_role("textbox", name=label)).to_have_count(1)
    shown = "Disconnect" if connected else "Connect"
    for button in (shown, "Send", "Help"):
        await expect(page.get_by_role("button", name=button)).to_have_count(1)
        await expect(page.get_by_role("button", name=button)).to_have_text(button)
    await expect(page.get_by_role("log")).to_have_count(1)


def http_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}/"


async def test_page_loads_without_errors_and_files_are_served_right(
    start_server: ServerFactory, open_console: OpenConsole
) -> None:
    server = await start_server(protocols=("echo",))
    console = await open_console(http_url(server))
    page = console.page
    await expect(page).to_have_title("wsplex console")
    await expect(page.get_by_label("Host")).to_have_value(f"ws://127.0.0.1:{server.port}/")
    await expect_controls_findable(page, connected=False)
    await expect(page.get_by_label("echo", exact=True)).not_to_be_checked()
    await expect(page.get_by_test_id("state")).to_have_text("closed")
    await expect(page.get_by_role("log")).to_contain_text("press Connect")

    index = await page.request.get(http_url(server))
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in index.headers["content-security-policy"]
    for path, kind in (("static/app.js", "javascript; charset=utf-8"), ("static/style.css", "text/css")):
        response = await page.request.get(http_url(server) + path)
        assert response.ok, path
        assert kind in response.headers["content-type"]
        assert response.headers["x-content-type-options"] == "nosniff"
    table = await page.request.get(http_url(server) + "protocols")
    assert table.headers["access-control-allow-origin"] == "*"  # a console elsewhere may ask
    missing = await page.request.get(http_url(server) + "static/nothing.js")
    assert missing.status == 404
    assert console.errors == []
    # Works with no network: everything the page loads comes from the server itself.
    origin = http_url(server)
    assert console.requests[0] == origin
    assert all(url.startswith(origin) for url in console.requests), console.requests


async def test_echo_shows_round_trip_and_reaches_another_tab(
    start_server: ServerFactory, open_console: OpenConsole
) -> None:
    server = await start_server(protocols=("echo",))
    alice = await open_console(http_url(server))
    bob = await open_console(http_url(server))
    await alice.page.get_by_label("echo", exact=True).check()
    await expect(alice.page.get_by_label("Protocol")).to_have_value("echo")
    await alice.page.get_by_role("button", name="Connect", exact=True).click()
    await expect(alice.page.get_by_test_id("chosen-protocol")).to_have_text("echo")
    await bob.connect("echo", "echo")

    await alice.send("hello from alice")
    await expect(alice.page.get_by_label("Message")).to_have_value("")
    await alice.expect_line("sent", "hello from alice")
    await alice.expect_line("received", re.compile(r"hello from alice\s*round trip [\d.]+ ms"))
    await bob.expect_line("received", "hello from alice")
    await expect(bob.page.locator(".line.received .rtt")).to_have_count(0)

    await bob.page.get_by_label("Message").fill("bob clicks")
    await bob.page.get_by_role("button", name="Send", exact=True).click()
    await alice.expect_line("received", "bob clicks")
    times = await alice.page.locator(".line time").all_inner_texts()
    assert times and all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", t) for t in times)

    # One tab leaving does not disturb the other.
    await bob.page.get_by_role("button", name="Disconnect").click()
    await expect(bob.page.get_by_test_id("state")).to_have_text("closed")
    await alice.send("still here")
    await alice.expect_line("received", re.compile(r"still here\s*round trip"))
    await expect(alice.page.get_by_test_id("state")).to_have_text("connected (open)")
    assert alice.errors == [] and bob.errors == []


#: For each protocol, a message to send and part of the reply it must get.
FIRST_EXCHANGE: dict[str, tuple[str, str | re.Pattern[str]]] = {
    "echo": ("ping", "ping"),
    "chat": ("/who", "* "),
    "command": ("date", re.compile(r"\d{4}-\d\d-\d\d")),
    "JSONsvc": ('{"from":"tester","to":"JSONsvc","cmd":"whoami"}', '"from":"JSONsvc"'),
}


@pytest.mark.parametrize("protocol", ALL_PROTOCOLS)
async def test_connects_with_each_protocol(
    protocol: str, start_server: ServerFactory, open_console: OpenConsole
) -> None:
    server = await start_server(protocols=ALL_PROTOCOLS)
    console = await open_console(http_url(server))
    await console.connect(protocol, protocol)
    await console.expect_line("notice", f"the server chose {protocol}")
    message, reply = FIRST_EXCHANGE[protocol]
    await console.send(message)
    await console.expect_line("received", reply)
    await console.page.get_by_role("button", name="Disconnect").click()
    await expect(console.page.get_by_test_id("state")).to_have_text("closed")
    await expect(console.page.get_by_test_id("chosen-protocol")).to_have_text("none")
    await console.expect_line("notice", "Disconnected (1000 normal closure")
    assert console.errors == []


async def test_offer_order_picks_the_protocol(
    start_server: ServerFactory, open_console: OpenConsole
) -> None:
    server = await start_server(protocols=ALL_PROTOCOLS)
    console = await open_console(http_url(server))
    page = console.page
    await page.get_by_label("command", exact=True).check()
    await page.get_by_label("echo", exact=True).check()
    await expect(page.get_by_label("Protocol")).to_have_value("command, echo")
    await page.get_by_role("button", name="Connect", exact=True).click()
    await expect(page.get_by_test_id("chosen-protocol")).to_have_text("command")
    # command offers its command list; picking one fills the Message box.
    shortcuts = page.get_by_label("Shortcuts")
    await expect(shortcuts).to_be_visible()
    values = await shortcuts.locator("option").all_inner_texts()
    assert {"help", "status", "clients --json", "killserver"} <= set(values)
    await shortcuts.select_option("clients --json")
    await expect(page.get_by_label("Message")).to_be_focused()
    await page.get_by_label("Message").press("Enter")
    await console.expect_line("received", '"clients"')
    await page.get_by_role("button", name="Disconnect").click()

    await page.get_by_label("command", exact=True).uncheck()
    await expect(page.get_by_label("Protocol")).to_have_value("echo")
    await page.get_by_role("button", name="Connect", exact=True).click()
    await expect(page.get_by_test_id("chosen-protocol")).to_have_text("echo")
    await expect(page.get_by_label("Shortcuts")).to_be_hidden()


async def test_two_pages_chat(start_server: ServerFactory, open_console: OpenConsole) -> None:
    server = await start_server(protocols=ALL_PROTOCOLS)
    alice = await open_console(http_url(server))
    bob = await open_console(http_url(server))
    await alice.connect("chat", "chat", name="alice")
    await bob.connect("chat", "chat", name="bob")
    await expect_controls_findable(alice.page, connected=True)
    await alice.send("hello bob")
    await bob.expect_line("received", "[alice] hello bob")
    await expect(bob.page.locator(".line.chat-message .speaker").last).to_have_text("[alice]")
    await bob.send("hi alice")
    await alice.expect_line("received", "[bob] hi alice")
    await alice.send("/name bob")  # taken: an error line, shown as one
    await expect(alice.page.locator(".line.chat-error").last).to_contain_text("! ")
    await alice.send("/who")
    await expect(alice.page.locator(".line.chat-notice").last).to_contain_text("bob")
    assert alice.errors == [] and bob.errors == []


async def test_jsonsvc_fields_compose_header_and_data(
    start_server: ServerFactory, open_console: OpenConsole
) -> None:
    server = await start_server(protocols=ALL_PROTOCOLS)
    sensor = await open_console(http_url(server))
    reader = await open_console(http_url(server))
    await sensor.connect("JSONsvc", "JSONsvc", name="sensor")
    await reader.connect("JSONsvc", "JSONsvc", name="reader")
    await expect(sensor.page.get_by_label("From")).to_have_value("sensor")
    await expect_controls_findable(sensor.page, connected=True)
    await reader.page.get_by_label("Action").select_option("requests")
    await reader.page.get_by_label("Value").fill("temp")
    await expect(reader.page.get_by_label("Message")).to_have_value('{"from":"reader","requests":"temp"}')
    await reader.page.get_by_label("Message").press("Enter")
    await reader.expect_line("sent", '"requests":"temp"')

    await sensor.page.get_by_label("Action").select_option("put")
    await sensor.page.get_by_label("Value").fill("temp")
    await sensor.page.get_by_label("Data").fill("21.5")
    await expect(sensor.page.get_by_label("Message")).to_have_value('{"from":"sensor","put":"temp"}>21.5')
    await sensor.page.get_by_role("button", name="Send", exact=True).click()
    await reader.expect_line("received", '{"from":"sensor","put":"temp"}>21.5')
    await expect(reader.page.locator(".line.jsonsvc .data").last).to_have_text("21.5")


async def test_help_lists_every_protocol(
    start_server: ServerFactory, open_console: OpenConsole
) -> None:
    server = await start_server(protocols=ALL_PROTOCOLS)
    console = await open_console(http_url(server))
    page = console.page
    await page.get_by_label("Protocol").fill("chat, echo")
    await page.get_by_role("button", name="Help").click()
    help_panel = page.locator("#help-panel")
    await expect(help_panel).to_be_visible()
    for entry in server.registry.describe():
        await expect(help_panel.get_by_role("heading", name=entry["name"], exact=True)).to_be_visible()
        await expect(help_panel).to_contain_text(entry["description"])
        for help_line in entry["help"].splitlines():
            await expect(help_panel).to_contain_text(help_line)
    await expect(help_panel).to_contain_text(
        f'new WebSocket("ws://127.0.0.1:{server.port}/", ["chat","echo"])'
    )
    await page.get_by_label("command", exact=True).check()  # the example follows the form
    await expect(help_panel).to_contain_text('["chat","echo","command"]')
    await page.get_by_role("button", name="Help").click()
    await expect(help_panel).to_be_hidden()


async def test_refused_protocol_is_explained(
    start_server: ServerFactory, open_console: OpenConsole
) -> None:
    server = await start_server(protocols=("echo",))
    console = await open_console(http_url(server))
    await console.connect("nosuch, other")
    await console.expect_line(
        "notice",
        "The server refused the connection: it does not speak the protocol(s) you offered "
        "(nosuch, other). It speaks: echo.",
    )
    await expect(console.page.get_by_test_id("state")).to_have_text("closed")
    await expect(console.page.get_by_role("button", name="Connect", exact=True)).to_be_visible()
    # Offering nothing is refused too, and said so.
    await console.connect("")
    await console.expect_line("notice", "you offered no protocol. It speaks: echo.")


async def test_bad_host_and_no_server_are_explained(
    start_server: ServerFactory, open_console: OpenConsole
) -> None:
    server = await start_server(protocols=("echo",))
    console = await open_console(http_url(server))
    await console.page.get_by_label("Host").fill("ftp://example.invalid/")
    await console.connect("echo")
    await console.expect_line("notice", "is not a WebSocket address")
    # A port bound but not listening: nobody answers there, and no other test takes it.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        await console.page.get_by_label("Host").fill(f"127.0.0.1:{port}")
        await console.connect("echo")
        await console.expect_line(
            "notice", f"Could not connect to ws://127.0.0.1:{port}/: no WebSocket server answered"
        )


async def test_sending_before_connecting(start_server: ServerFactory, open_console: OpenConsole) -> None:
    server = await start_server(protocols=("echo",))
    console = await open_console(http_url(server))
    await console.send("too soon")
    await console.expect_line("notice", "Not connected: press Connect first.")
    # Typed right after Connect, before the handshake is surely done: sent once open.
    await console.connect("echo")
    await console.send("hasty")
    await console.expect_line("received", re.compile(r"hasty\s*round trip"))
    log = console.page.get_by_role("log")
    await expect(log.locator(".line").filter(has_text="Not sent")).to_have_count(0)


async def test_close_code_is_explained(
    start_server: ServerFactory, open_console: OpenConsole
) -> None:
    server = await start_server(protocols=("echo",), max_message_size=64)
    console = await open_console(http_url(server))
    await console.connect("echo", "echo")
    await console.send("x" * 200)
    await console.expect_line("notice", "The server closed the connection: 1009 message too big")
    await expect(console.page.get_by_test_id("state")).to_have_text("closed")


async def test_kick_is_explained(start_server: ServerFactory, open_console: OpenConsole) -> None:
    """An operator kicks the page from the command protocol: 1008 with its reason, in words."""
    server = await start_server(protocols=ALL_PROTOCOLS, admin_token="s3cret")
    console = await open_console(http_url(server))
    await console.connect("chat", "chat", name="victim")
    await console.send("/who")  # answered once the name is claimed (a Redis round trip)
    await console.expect_line("received", "* in lobby: victim")
    async with connect(ws_url(server), subprotocols=[Subprotocol("command")]) as operator:
        await operator.send("auth s3cret")
        assert (await operator.recv(decode=True)).startswith("ok")
        await operator.send("clients --json")
        clients = json.loads(await operator.recv())["clients"]
        victim = next(c["id"] for c in clients if c["name"] == "victim")
        await operator.send(f"kick {victim}")
        assert (await operator.recv(decode=True)).startswith("ok")
    await console.expect_line(
        "notice",
        'The server closed the connection: 1008 policy violation: the server closed this connection '
        'on purpose, reason: "kicked"',
    )


async def test_server_shutdown_is_shown(
    spawn: Spawn, open_console: OpenConsole
) -> None:
    server = spawn("--protocols", "echo")
    console = await open_console(server.http + "/")
    await console.connect("echo", "echo")
    await asyncio.to_thread(server.stop)
    await console.expect_line(
        "notice",
        'The server closed the connection: 1001 going away: the server is shutting down or restarting, '
        'reason: "server shutting down"',
    )
    await expect(console.page.get_by_test_id("state")).to_have_text("closed")
    await expect(console.page.get_by_test_id("chosen-protocol")).to_have_text("none")


async def test_server_crash_is_shown(spawn: Spawn, open_console: OpenConsole) -> None:
    server = spawn("--protocols", "echo")
    console = await open_console(server.http + "/")
    await console.connect("echo", "echo")
    await asyncio.to_thread(server.stop, signal.SIGKILL)  # no close frame: the TCP connection just ends
    await console.expect_line("notice", "The connection dropped: 1006 connection lost")
    await expect(console.page.get_by_test_id("state")).to_have_text("closed")


async def test_screenshot(
    start_server: ServerFactory, open_console: OpenConsole, tmp_path: Path
) -> None:
    """The README's picture: two people chatting, seen from one of them."""
    server = await start_server(protocols=ALL_PROTOCOLS)
    alice = await open_console(http_url(server))
    bob = await open_console(http_url(server))
    await alice.page.get_by_label("chat", exact=True).check()
    await alice.page.get_by_label("echo", exact=True).check()
    await alice.connect("chat, echo", "chat", name="alice")
    await bob.connect("chat", "chat", name="bob")
    await alice.expect_line("received", "* bob joined")
    await bob.send("hi alice, is the new server up?")
    await alice.expect_line("received", "[bob] hi alice")
    await alice.send("yes: one port, four protocols")
    await bob.expect_line("received", "[alice] yes")
    await alice.send("/who")
    await expect(alice.page.locator(".line.chat-notice")).not_to_have_count(0)
    # Tall enough for the whole page: no scrolling, so the sticky status bar sits at the top.
    await alice.page.set_viewport_size({"width": 1000, "height": 860})
    await alice.page.evaluate("window.scrollTo(0, 0)")
    target = tmp_path / "console.png"
    await alice.page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(target, os.environ[SCREENSHOT_ENV])


ECHO_WITH_EXTENSIONS = """async ([url, texts]) => {
    const ws = new WebSocket(url, ["echo"]);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    const replies = [];
    for (const text of texts) {
        const echoed = new Promise(resolve => { ws.onmessage = event => resolve(event.data); });
        ws.send(text);
        replies.push(await echoed);
    }
    ws.close();
    return [ws.extensions, replies];
}"""


@pytest.mark.parametrize(("flags", "answer"), [
    ({}, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ({"compression_context_takeover": True}, "permessage-deflate"),
    ({"compression": False}, ""),
], ids=["deflate", "context-takeover", "no-compression"])
async def test_chromium_with_compression_on_and_off(
    start_server: ServerFactory, open_console: OpenConsole, flags: dict[str, bool], answer: str
) -> None:
    """SPEC §14: Chromium offers permessage-deflate; it gets it unless --no-compression."""
    server = await start_server(protocols=("echo",), **flags)
    console = await open_console(http_url(server))
    texts = [f"line {n}: long enough to be worth compressing, " * 20 for n in range(3)]
    extensions, replies = await console.page.evaluate(ECHO_WITH_EXTENSIONS, [ws_url(server), texts])
    assert replies == texts  # with context takeover, the later ones use the earlier ones' window
    assert extensions == answer
    compressed = 3 if answer else 0
    assert server.stats.compressed_messages_in == server.stats.compressed_messages_out == compressed
    assert console.errors == []
