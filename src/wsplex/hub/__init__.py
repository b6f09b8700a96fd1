"""Fan-out and shared directory for protocols: see :mod:`wsplex.app.hub`."""

from __future__ import annotations

from wsplex.app.hub import ClientInfo, Hub, protocol_topic
from wsplex.config import Settings
from wsplex.hub.memory import MemoryHub
from wsplex.stats import Stats

__all__ = ["ClientInfo", "Hub", "MemoryHub", "create_hub", "protocol_topic"]


def create_hub(settings: Settings, node_id: str, stats: Stats | None = None) -> Hub:
    """The one place that picks the hub: Redis with ``--redis``, else memory.

    redis is imported only here, and only when asked for, so a single node
    never needs the ``redis`` extra.
    """
    if not settings.redis_url:
        return MemoryHub(node_id)
    from wsplex.hub.redis import RedisHub

    return RedisHub(node_id, settings.redis_url, ttl=settings.redis_ttl, stats=stats,
                    pinned=[protocol_topic(name) for name in settings.protocols])
