"""``echo``: every message goes to every echo client, the sender included (SPEC §2).

The server subscribes every session to its protocol's topic, so echo only
publishes: one ``Outgoing`` per message, framed once for all receivers.
"""

from __future__ import annotations

from wsplex.app.hub import protocol_topic
from wsplex.app.outgoing import Outgoing
from wsplex.app.protocol import HookResult, Protocol
from wsplex.app.session import Session

TOPIC = protocol_topic("echo")


class EchoProtocol(Protocol):
    name = "echo"
    description = "Every message goes to every echo client, the sender included."
    help = (
        "Send any message, text or binary: it comes back to you and to every other\n"
        "client connected with the echo protocol, with its type unchanged."
    )

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        if isinstance(message, str):
            self.hub.publish(TOPIC, Outgoing.text(message))
        else:
            self.hub.publish(TOPIC, Outgoing.binary(message))
        return None
