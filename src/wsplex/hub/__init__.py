"""The hub: the topic space, channels and directory of SPEC §9 and §10.

:mod:`wsplex.app.hub` is the interface protocols see; :mod:`.local` is this
node's bookkeeping, shared by :mod:`.memory` (one process) and :mod:`.redis`
(a cluster sharing Redis).
"""

from __future__ import annotations

from wsplex.app.hub import protocol_channel
from wsplex.config import Settings
from wsplex.hub.base import NodeHub
from wsplex.hub.memory import MemoryHub
from wsplex.stats import Stats

__all__ = ["MemoryHub", "NodeHub", "create_hub"]


def create_hub(settings: Settings, node_id: str, stats: Stats | None = None) -> NodeHub:
    """The one place that picks the hub: Redis with ``--redis``, else memory.

    redis is imported only here, and only when asked for, so a single node
    never needs the ``redis`` extra.
    """
    hub: NodeHub
    if not settings.redis_url:
        memory = hub = MemoryHub(node_id, stats)
        memory.history_bounds.max_topics = settings.history_topics
        memory.history_bounds.max_bytes = settings.history_bytes
        store = memory.retained_store
        store.max_value_size, store.max_count = settings.retained_value_size, settings.retained_max
        store.max_per_sender, store.max_bytes = settings.retained_per_sender, settings.retained_bytes
    else:
        from wsplex.hub.redis import RedisHub

        pinned = [protocol_channel(name) for name in settings.protocols]
        redis = hub = RedisHub(node_id, settings.redis_url, ttl=settings.redis_ttl, pinned=pinned,
                               stats=stats)
        redis.max_retained_value_size = settings.retained_value_size
        redis.max_retained, redis.max_retained_bytes = settings.retained_max, settings.retained_bytes
        redis.max_retained_per_sender = settings.retained_per_sender
        redis.max_history_topics, redis.max_history_bytes = settings.history_topics, settings.history_bytes
        redis.ping_timeout = settings.redis_ping_timeout
    hub.local.max_subscriptions = settings.max_subscriptions
    queues = memory.queues if not settings.redis_url else redis.queues
    queues.limit, queues.max_bytes = settings.stomp_queue_limit, settings.stomp_queue_bytes
    queues.max_queues = settings.stomp_max_queues
    return hub
