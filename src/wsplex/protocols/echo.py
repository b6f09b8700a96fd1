"""``echo``: every message goes to every echo client, the sender included (SPEC §2)."""

from __future__ import annotations

from wsplex.protocol import HookResult, Protocol
from wsplex.session import Session
from wsplex.wire import Outgoing

TOPIC = "echo"


class EchoProtocol(Protocol):
    name = "echo"
    description = "Every message goes to every echo client, the sender included."
    help = (
        "Send any message, text or binary: it comes back to you and to every other\n"
        "client connected with the echo protocol, with its type unchanged."
    )

    def on_connect(self, session: Session) -> HookResult:
        self.hub.subscribe(TOPIC, session)
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        if isinstance(message, str):
            self.hub.publish(TOPIC, Outgoing.text(message))
        else:
            self.hub.publish(TOPIC, Outgoing.binary(message))
        return None

    def on_disconnect(self, session: Session, code: int) -> HookResult:
        self.hub.unsubscribe(TOPIC, session)
        return None
