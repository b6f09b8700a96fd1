"""paho-mqtt, the real MQTT client, driven from asyncio tests.

paho runs its network loop in a thread of its own; every callback hands its
event to the test's event loop with ``call_soon_threadsafe``, and the test
awaits queues and futures. Nothing sleeps: each wait is for an event, with a
timeout only so that a broken server fails the test instead of hanging it.
Blocking paho calls (``loop_stop`` joins the thread) run in a worker thread, so
the in-process server keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

V311 = MQTTProtocolVersion.MQTTv311
V5 = MQTTProtocolVersion.MQTTv5
WAIT = 10.0


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    user: tuple[tuple[str, str], ...]
    subscription_ids: tuple[int, ...]
    properties: Any


class Paho:
    """One paho-mqtt client over WebSocket (``transport="websockets"``, path ``/mqtt``)."""

    def __init__(self, port: int, client_id: str = "", *, version: MQTTProtocolVersion = V311,
                 clean: bool = True, path: str = "/mqtt") -> None:
        self.port = port
        self.version = version
        self.clean = clean
        self._loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if version == V311:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  transport="websockets", protocol=version,
                                  reconnect_on_failure=False, **kwargs)
        self.client.ws_set_options(path=path)
        self.messages: asyncio.Queue[Received] = asyncio.Queue()
        self.connected: asyncio.Future[tuple[ReasonCode, dict[str, Any], Any]] = self._loop.create_future()
        self.disconnected: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._pending: dict[int, Any] = {}  # acks that came before their mid was known
        c = self.client
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_ack
        c.on_unsubscribe = self._on_ack
        c.on_publish = self._on_publish
        c.on_disconnect = self._on_disconnect

    # -- callbacks (paho's thread) ---------------------------------------------

    def _call(self, function: Any, *args: Any) -> None:
        self._loop.call_soon_threadsafe(function, *args)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._call(_settle, self.connected, (reason, {"session_present": flags.session_present}, props))

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        user = tuple(getattr(props, "UserProperty", ()) or ())
        ids = getattr(props, "SubscriptionIdentifier", ()) or ()
        ids = tuple(ids) if isinstance(ids, list) else (ids,)
        received = Received(message.topic, bytes(message.payload), message.qos, bool(message.retain),
                            user, ids, props)
        self._call(self.messages.put_nowait, received)

    def _on_ack(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self._call(self._ack, mid, reasons)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._call(self._ack, mid, reason)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._call(_settle, self.disconnected, reason)

    def _ack(self, mid: int, value: Any) -> None:
        future = self._acks.pop(mid, None)
        if future is None:
            self._pending[mid] = value
        else:
            _settle(future, value)

    async def _wait_ack(self, mid: int) -> Any:
        if mid in self._pending:
            return self._pending.pop(mid)
        future = self._acks[mid] = self._loop.create_future()
        return await asyncio.wait_for(future, WAIT)

    # -- what tests call ----------------------------------------------------------

    async def connect(self, *, keepalive: int = 60, properties: Properties | None = None,
                      will: tuple[str, bytes, int, bool] | None = None,
                      will_properties: Properties | None = None) -> tuple[ReasonCode, dict[str, Any], Any]:
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain, properties=will_properties)
        extra: dict[str, Any] = {}
        if self.version == V5:
            extra["clean_start"] = self.clean
            extra["properties"] = properties
        self.client.connect_async("127.0.0.1", self.port, keepalive, **extra)
        self.client.loop_start()
        return await asyncio.wait_for(asyncio.shield(self.connected), WAIT)

    async def subscribe(self, topic: str, qos: int = 0, *, options: Any = None,
                        properties: Properties | None = None) -> list[Any]:
        if options is not None:
            result, mid = self.client.subscribe(topic, options=options, properties=properties)
        else:
            result, mid = self.client.subscribe(topic, qos, properties=properties)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None
        return list(await self._wait_ack(mid))

    async def unsubscribe(self, topic: str) -> Any:
        result, mid = self.client.unsubscribe(topic)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None
        return await self._wait_ack(mid)

    async def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                      properties: Properties | None = None) -> Any:
        """Publish and wait until paho is done with it (sent at QoS 0, acknowledged above)."""
        info = self.client.publish(topic, payload, qos, retain, properties=properties)
        return await self._wait_ack(info.mid)

    async def next_message(self) -> Received:
        return await asyncio.wait_for(self.messages.get(), WAIT)

    async def wait_disconnected(self) -> ReasonCode:
        return await asyncio.wait_for(asyncio.shield(self.disconnected), WAIT)

    async def disconnect(self, properties: Properties | None = None) -> None:
        self.client.disconnect(properties=properties)
        await self.stop()

    async def stop(self) -> None:
        """Disconnect if still connected (it also wakes paho's loop), then end its thread."""
        if self.client.is_connected():
            self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def properties(packet_type: int, **values: Any) -> Properties:
    """paho Properties for ``packet_type`` (``PacketTypes.PUBLISH``...) set from keywords."""
    props = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props
