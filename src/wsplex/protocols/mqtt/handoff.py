"""A persistent MQTT session as text, to move it from node to node (SPEC §9, §11).

A client whose session is kept on node A while it is away may come back on
node B. B asks A for it through hub values (``mqtt.wanted:A:CLIENT_ID``); A
writes the session here as JSON under ``mqtt.handoff:CLIENT_ID`` and forgets
it; B reads it and carries on with Session Present (3.1.1 §3.2.2.2, 5.0
§3.2.2.1.1). Payloads and 5.0 property blocks are base64.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from wsplex.protocols.mqtt.codec import MalformedPacket, decode_properties, encode_properties
from wsplex.protocols.mqtt.state import ClientSession, Message, Subscription


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _message(message: Message) -> dict[str, Any]:
    return {"topic": message.topic, "payload": _b64(message.payload), "qos": message.qos,
            "retain": message.retain, "props": _b64(encode_properties(message.properties)),
            "expires": message.expires, "id": message.packet_id, "released": message.released}


def dump_session(client: ClientSession) -> str:
    """The session's state: subscriptions, messages in flight and queued, QoS 2 ids held."""
    subscriptions = {
        written: [s.topic_filter, s.qos, s.no_local, s.retain_as_published, s.retain_handling,
                  s.identifier, s.group]
        for written, s in client.subscriptions.items()
    }
    return json.dumps({
        "expiry": client.expiry,
        "subscriptions": subscriptions,
        "inflight": [_message(m) for m in client.inflight.values()],
        "queue": [_message(m) for m in client.queue],
        "awaiting_release": sorted(client.awaiting_release),
        "dropped": client.dropped,
    })


def _messages(items: Iterable[dict[str, Any]]) -> list[Message]:
    return [Message(item["topic"], base64.b64decode(item["payload"]), int(item["qos"]),
                    bool(item["retain"]), decode_properties(base64.b64decode(item["props"])),
                    item["expires"], int(item["id"]), bool(item["released"])) for item in items]


def load_session(text: str, client_id: str, max_queued: int) -> ClientSession | None:
    """The session :func:`dump_session` wrote, or None when the text is not one (a foreign value)."""
    try:
        data = json.loads(text)
        client = ClientSession(client_id, max_queued)
        client.expiry = float(data["expiry"])
        for written, (topic_filter, qos, no_local, rap, handling, identifier, group) in \
                data["subscriptions"].items():
            client.subscriptions[written] = Subscription(topic_filter, qos, no_local, rap, handling,
                                                         identifier, group)
        for message in _messages(data["inflight"]):
            client.inflight[message.packet_id] = message
        client.queue.extend(_messages(data["queue"])[-max_queued:])
        client.awaiting_release.update(int(i) for i in data["awaiting_release"])
        client.dropped = int(data["dropped"])
    except (ValueError, KeyError, TypeError, MalformedPacket):
        return None
    return client
