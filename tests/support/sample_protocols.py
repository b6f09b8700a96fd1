"""Protocols that live outside wsplex, loaded the way a third party would load them."""

from __future__ import annotations

import asyncio

from wsplex.app import HookResult, Outgoing, Protocol, Publication, Sender, Session


class Shout(Protocol):
    """The README's plugin example: every message comes back in capitals, to everyone."""

    name = "shout"
    description = "Every message comes back in capitals, to everyone."
    help = "Type something; everyone connected with 'shout' sees it in capitals."
    text_only = True  # publications that are not UTF-8 never reach render()

    def on_connect(self, session: Session) -> HookResult:
        self.hub.subscribe("shout/#", session)  # a topic filter
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        if isinstance(message, str):
            sender = Sender(self.name, session.id)  # set by the server, never by the client
            self.hub.publish(Publication("shout/all", message, sender))
        return None

    def render(self, publication: Publication) -> Outgoing | None:
        """How this protocol shows a publication: called once per publication,
        for all of this node's shout receivers."""
        assert publication.text is not None
        return Outgoing.text(f"{publication.sender.seen_by(self.name)}: {publication.text.upper()}")


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
