"""``wsplex connect URL --protocol NAME``: a terminal client for any WebSocket server.

Received messages go to stdout, one per line (binary as hex, ``--json``
pretty-prints JSON text); everything else (the protocol the server chose, the
close code and reason, errors, a refused handshake's status and body) goes to
stderr, so ``wsplex connect ... > replies.txt`` keeps only what the server said.

At a terminal it is interactive: a prompt with line editing and history
(prompt-toolkit), received messages printed above it; Ctrl-D or Ctrl-C ends
the input and closes the connection with 1000. With standard input not a
terminal, each line (without its line ending) is sent as a text message; when
input ends, the client waits until the server has been quiet for ``--linger``
seconds (its replies are in), then closes with 1000. It also stops as soon as
the server closes.

Exit status: 0 when the input ended or the server closed with 1000 or 1001;
1 for any other close, a refused handshake or a connection that failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn, TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import Close, CloseCode
from websockets.typing import Subprotocol

#: Close codes that mean the server ended the conversation on purpose (RFC 6455 §7.4.1).
GOOD_CLOSES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY})
STDIN = 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"wsplex connect: error: {message} (see wsplex connect --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wsplex connect",
        description="Talk to a WebSocket server from a terminal or a script: lines in are text "
        "messages out; messages received go to stdout (binary as hex), everything else to stderr.",
        epilog="Exit status: 0 when input ended or the server closed with 1000 or 1001; "
        "1 for any other close, a refused handshake or a failed connection.",
    )
    parser.add_argument("url", metavar="URL", help="ws:// or wss:// address, e.g. ws://localhost:12352/")
    parser.add_argument("--protocol", action="append", default=[], metavar="NAME",
                        help="subprotocol to offer (repeatable, in order of preference)")
    parser.add_argument("--json", action="store_true",
                        help="pretty-print received text that is JSON")
    parser.add_argument("--linger", type=_seconds, default=1.0, metavar="S",
                        help="when standard input is not a terminal: after it ends, wait until "
                        "the server has sent nothing for S seconds, then close (default: 1)")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more, got {text!r}")
    return value


@dataclass
class Printer:
    """Where each kind of output goes; ``json`` pretty-prints JSON text."""

    json: bool = False
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    received: int = 0  # messages printed so far: the quiet check counts them

    def message(self, message: str | bytes) -> None:
        self.received += 1
        print(self.render(message), file=self.out, flush=True)

    def render(self, message: str | bytes) -> str:
        if isinstance(message, bytes):
            return message.hex()
        if self.json:
            try:
                return json.dumps(json.loads(message), indent=2, ensure_ascii=False)
            except ValueError:
                pass
        return message

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def describe_close(received: Close | None, server_first: bool) -> tuple[str, bool]:
    """What to say about the end of the connection, and whether it counts as a good end.

    ``received`` is the server's close frame; ``server_first`` says it was not
    the answer to ours.
    """
    if received is None:
        return "connection lost: no close frame from the server (1006)", False
    if not server_first:
        return f"closed: {received}", True
    return f"closed by the server: {received}", received.code in GOOD_CLOSES


async def receive(ws: ClientConnection, printer: Printer) -> bool:
    """Print every message until the connection ends; False when the server closed it badly."""
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            printer.message(message)
    state = ws.protocol
    server_first = state.close_sent is None or bool(state.close_rcvd_then_sent)
    text, good = describe_close(state.close_rcvd, server_first)
    printer.note(text)
    return good


def stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines of standard input as they come (``None`` at its end), read by a daemon thread.

    A thread reads any kind of input (pipe, file, /dev/null) the same way, and a
    daemon thread blocked in ``os.read`` does not keep the process alive once
    the server has closed. Not ``sys.stdin``: a thread blocked in its buffered
    reader holds a lock that the interpreter's exit then cannot take.
    """
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(raw: bytes) -> None:
        line = raw.removesuffix(b"\r").decode("utf-8", "replace")
        loop.call_soon_threadsafe(queue.put_nowait, line)

    def read() -> None:
        pending = b""
        while chunk := os.read(STDIN, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                put(raw)
        if pending:
            put(pending)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue


async def send_piped(ws: ClientConnection, printer: Printer, linger: float,
                     receiver: asyncio.Task[bool]) -> None:
    """Send each line of standard input, then wait for the server to go quiet."""
    lines = stdin_lines(asyncio.get_running_loop())
    while (line := await lines.get()) is not None:
        await ws.send(line)
    while not receiver.done():
        seen = printer.received
        await asyncio.wait({receiver}, timeout=linger)
        if printer.received == seen:
            return


async def send_typed(ws: ClientConnection) -> None:
    """The interactive prompt: one line, one text message, until Ctrl-D or Ctrl-C."""
    from prompt_toolkit import PromptSession

    session: PromptSession[str] = PromptSession()
    while True:
        try:
            line = await session.prompt_async("> ")
        except (EOFError, KeyboardInterrupt):
            return
        await ws.send(line)


async def talk(url: str, protocols: Sequence[str], printer: Printer, linger: float,
               interactive: bool) -> int:
    """Connect, converse, close; the exit status."""
    try:
        ws = await connect(url, subprotocols=[Subprotocol(name) for name in protocols],
                           max_size=None)
    except InvalidStatus as refused:
        response = refused.response
        printer.note(f"handshake refused: HTTP {response.status_code} {response.reason_phrase}")
        body = response.body.decode("utf-8", "replace").rstrip("\n") if response.body else ""
        if body:
            printer.note(body)
        return 1
    except (InvalidURI, InvalidHandshake, OSError, TimeoutError) as exc:
        printer.note(f"cannot connect to {url}: {exc}")
        return 1
    chosen = ws.subprotocol
    printer.note(f"connected to {url}; protocol: {chosen}" if chosen
                 else f"connected to {url}; no protocol chosen")
    receiver = asyncio.create_task(receive(ws, printer))
    sender = asyncio.create_task(send_typed(ws) if interactive
                                 else send_piped(ws, printer, linger, receiver))
    await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
    if receiver.done():  # the server closed first: its code decides
        sender.cancel()
        return 0 if receiver.result() else 1
    try:
        sender.result()
    except ConnectionClosed:  # the server closed while a line was being sent: its code decides
        return 0 if await receiver else 1
    await ws.close()  # input ended: we close with 1000, and that is a success
    await receiver
    return 0


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    printer = Printer(json=args.json)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not interactive:
        return asyncio.run(talk(args.url, args.protocol, printer, args.linger, False))
    from prompt_toolkit.patch_stdout import patch_stdout

    with patch_stdout(raw=True):
        printer.out, printer.err = sys.stdout, sys.stderr  # the patched ones: print above the prompt
        return asyncio.run(talk(args.url, args.protocol, printer, args.linger, True))
