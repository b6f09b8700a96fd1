"""Helpers shared by the tests; ``conftest.py`` turns them into fixtures.

``rawws`` (a WebSocket client on a raw socket, for wire edge cases) and
``sample_protocols`` (plugins loaded as a third party would load them, as
``support.sample_protocols:Shout``) are modules of their own.
"""

from support.links import RecordingLink
from support.net import free_port, http_get, ws_url
from support.processes import ServerFactory, Spawn, WsplexProcess, start_wsplex
from support.redis_server import RedisProcess, flush_redis

__all__ = [
    "RecordingLink",
    "RedisProcess",
    "ServerFactory",
    "Spawn",
    "WsplexProcess",
    "flush_redis",
    "free_port",
    "http_get",
    "start_wsplex",
    "ws_url",
]
