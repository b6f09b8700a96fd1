"""Protocols that live outside wsplex, loaded the way a third party would load them."""

from __future__ import annotations

import asyncio

from wsplex.app.outgoing import Outgoing
from wsplex.app.protocol import HookResult, Protocol
from wsplex.app.session import Session


class Shout(Protocol):
    """The README's plugin example: every message comes back in capitals, to everyone."""

    name = "shout"
    description = "Every message comes back in capitals, to everyone."
    help = "Type something; everyone connected with 'shout' sees it in capitals."

    def on_connect(self, session: Session) -> HookResult:
        self.hub.subscribe("shout", session)
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        if isinstance(message, str):
            self.hub.publish("shout", Outgoing.text(message.upper()))
        return None

    def on_disconnect(self, session: Session, code: int) -> HookResult:
        self.hub.unsubscribe("shout", session)
        return None


class Fragile(Protocol):
    """Raises on "boom" (sync) and "later" (async), to prove only that connection closes."""

    name = "fragile"
    description = "Crashes on demand."
    help = "Send 'boom' or 'later' to make the handler raise."

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        if message == "boom":
            raise RuntimeError("boom")
        if message == "later":
            return self._crash_later()
        if message == "slow":
            return self._slow(session)
        session.send_text(f"ok {message!s}")
        return None

    async def _crash_later(self) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("later")

    async def _slow(self, session: Session) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        session.send_text("slow done")


class NotAProtocol:
    name = "nope"
