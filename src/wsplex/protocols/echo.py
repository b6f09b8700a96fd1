"""``echo``: every message goes to every echo client, the sender included (SPEC §2).

Echo is topic ``echo`` of the topic space (SPEC §10): each echo session
subscribes to it, and each message is a publication there, not retained, so
an MQTT or JSONsvc client that subscribes to ``echo`` hears the echo clients
and one that publishes on ``echo`` is heard by them. The sender's identity is
its session id (others see ``echo:ID``). A message from an echo client is
framed once, as it was sent, for every echo receiver (``native``).
"""

from __future__ import annotations

from wsplex.app import Context, HookResult, Outgoing, Protocol, Publication, Sender, Session

TOPIC = "echo"


class EchoProtocol(Protocol):
    name = "echo"
    description = "Every message goes to every echo client, the sender included."
    help = (
        "Send any message, text or binary: it comes back to you and to every other\n"
        "client connected with the echo protocol, with its type unchanged.\n"
        "It is topic 'echo' for every other protocol of this server."
    )

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.hub.pin(TOPIC)  # every echo client hears every node from its handshake on

    def on_connect(self, session: Session) -> HookResult:
        self.hub.subscribe(TOPIC, session)
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        sender = session.state
        if sender is None:  # made at the first message: an idle client costs no Sender
            sender = session.state = Sender(self.name, session.id)
        native = Outgoing.text(message) if isinstance(message, str) else Outgoing.binary(message)
        self.hub.publish(Publication(TOPIC, message, sender, native=native))
        return None
