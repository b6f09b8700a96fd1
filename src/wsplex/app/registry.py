"""The protocol table and subprotocol selection (SPEC §1, RFC 6455 §4.2.2).

The table is ordered: the order of ``--protocols`` is the server's preference.
Protocols come from three places: the built-ins, the ``wsplex.protocols``
entry point group (installed plugins), and ``--protocol-module pkg.mod:Class``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence
from importlib.metadata import entry_points

from wsplex.app.protocol import Protocol
from wsplex.config import Preference

ENTRY_POINT_GROUP = "wsplex.protocols"

_BUILTINS = {
    "echo": "wsplex.protocols.echo:EchoProtocol",
    "chat": "wsplex.protocols.chat:ChatProtocol",
    "command": "wsplex.protocols.command:CommandProtocol",
    "JSONsvc": "wsplex.protocols.jsonsvc:JSONsvcProtocol",
    "mqtt": "wsplex.protocols.mqtt:MQTTProtocol",
    "v12.stomp": "wsplex.protocols.stomp:Stomp12",
    "v11.stomp": "wsplex.protocols.stomp:Stomp11",
    "v10.stomp": "wsplex.protocols.stomp:Stomp10",
    "wamp.2.json": "wsplex.protocols.wamp:WampJSON",
    "wamp.2.msgpack": "wsplex.protocols.wamp:WampMsgpack",
}


class ProtocolLoadError(Exception):
    """A protocol named on the command line or by a plugin cannot be loaded."""


def load_class(spec: str) -> type[Protocol]:
    """Import ``package.module:Class`` and check that it is a usable protocol."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ProtocolLoadError(f"{spec!r}: expected package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProtocolLoadError(f"{spec!r}: cannot import {module_name}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Protocol)):
        raise ProtocolLoadError(f"{spec!r}: {class_name} is not a wsplex Protocol subclass")
    if not cls.name or not cls.name.isprintable() or any(c in cls.name for c in " ,;\"'"):
        raise ProtocolLoadError(f"{spec!r}: protocol name {cls.name!r} is not a valid token")
    return cls


def load_named(name: str, spec: str) -> type[Protocol]:
    """The class ``spec`` names, which must call itself ``name``: an entry point's name
    is the protocol's name, so a plugin cannot be enabled under a name it does not answer to."""
    cls = load_class(spec)
    if cls.name != name:
        raise ProtocolLoadError(f"entry point {name!r} ({spec}) is protocol {cls.name!r}: a "
                                f"{ENTRY_POINT_GROUP} entry point must be named as its class's name")
    return cls


def available_protocols(extra_modules: Iterable[str] = ()) -> dict[str, str]:
    """Every protocol this install can serve: name -> ``module:Class``.

    Built-ins first, then installed plugins, then ``--protocol-module`` classes.
    Loading a ``--protocol-module`` class here also checks it exists.
    """
    found = dict(_BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    for spec in extra_modules:
        found[load_class(spec).name] = spec
    return found


class ProtocolRegistry:
    """The enabled protocols, in the server's order of preference."""

    def __init__(self, classes: Sequence[type[Protocol]]) -> None:
        self._classes = {cls.name: cls for cls in classes}

    @classmethod
    def build(cls, enabled: Sequence[str], extra_modules: Iterable[str] = ()) -> ProtocolRegistry:
        """Load the protocols named in ``enabled`` (in that order)."""
        available = available_protocols(extra_modules)
        unknown = [name for name in enabled if name not in available]
        if unknown:
            raise ProtocolLoadError(
                f"unknown protocol {', '.join(unknown)} (available: {', '.join(available)})"
            )
        return cls([load_named(name, available[name]) for name in enabled])

    def __iter__(self) -> Iterator[type[Protocol]]:
        return iter(self._classes.values())

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __len__(self) -> int:
        return len(self._classes)

    @property
    def names(self) -> list[str]:
        return list(self._classes)

    def takes_raw_text(self, name: str) -> bool:
        """Whether clients of ``name`` read a plain line of text (``Protocol.raw_text``)."""
        cls = self._classes.get(name)
        return cls is not None and cls.raw_text

    def describe(self) -> list[dict[str, str]]:
        """The table as ``/protocols`` serves it."""
        return [
            {"name": cls.name, "description": cls.description, "help": cls.help}
            for cls in self._classes.values()
        ]

    def select(
        self, offered: Sequence[str], prefer: Preference = "client", default: str | None = None
    ) -> str | None:
        """The one protocol to echo back, or None to refuse the handshake.

        SPEC §1: the first of the client's offers that we have, or with
        ``prefer="server"`` the first of ours that the client offered. A client
        that offers nothing falls back to ``default`` when one is set.
        """
        if not offered:
            return default if default in self._classes else None
        if prefer == "server":
            return next((name for name in self._classes if name in offered), None)
        # Our own copy of the name, not the client's: each connection keeps it for its 101.
        return next((self._classes[name].name for name in offered if name in self._classes), None)


def parse_offer(header_values: Iterable[str]) -> list[str]:
    """Split ``Sec-WebSocket-Protocol`` header values into tokens (RFC 6455 §4.1, §11.3.4).

    The header may appear several times and each value is a comma-separated list.
    """
    return [token.strip() for value in header_values for token in value.split(",") if token.strip()]
