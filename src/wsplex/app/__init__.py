"""The plugin API: everything a protocol author imports (SPEC §7, §10).

A protocol imports ``wsplex.app`` and nothing else of wsplex: the protocol base
class and its context, the session it talks to, messages on their way out,
the hub with its topic space, and the names of close codes.
"""

from wsplex import __version__ as VERSION
from wsplex.app.budget import LISTING_LIMIT, Budget, too_soon
from wsplex.app.hub import ClientInfo, Hub, QueueConsumer, QueueFigures, QueueMessage, protocol_channel
from wsplex.app.outgoing import Outgoing
from wsplex.app.protocol import Context, Protocol, ProtocolTable
from wsplex.app.publication import Publication, Sender
from wsplex.app.session import HookResult, Session
from wsplex.app.topics import filter_error, is_server_topic, is_wildcard, matches, topic_error
from wsplex.app.users import Users
from wsplex.stats import Figure, Stats
from wsplex.ws.close import CloseCode

__all__ = [
    "LISTING_LIMIT",
    "VERSION",
    "Budget",
    "ClientInfo",
    "CloseCode",
    "Context",
    "Figure",
    "HookResult",
    "Hub",
    "Outgoing",
    "Protocol",
    "ProtocolTable",
    "Publication",
    "QueueConsumer",
    "QueueFigures",
    "QueueMessage",
    "Sender",
    "Session",
    "Stats",
    "Users",
    "filter_error",
    "is_server_topic",
    "is_wildcard",
    "matches",
    "protocol_channel",
    "too_soon",
    "topic_error",
]
