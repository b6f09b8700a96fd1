"""The in-memory hub: one process, the embedded default.

Every operation is local: fan-out goes straight to :meth:`Local.deliver`, the
step the Redis hub's listener calls for publications from other nodes, and
the directory is a few dicts.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsplex.app.hub import ClientInfo, QueueConsumer, QueueFigures, QueueMessage
from wsplex.app.outgoing import Outgoing
from wsplex.app.publication import Publication
from wsplex.app.session import Session
from wsplex.hub.base import NodeHub
from wsplex.hub.history import History
from wsplex.hub.queues import MemoryQueues
from wsplex.hub.retained import Retained
from wsplex.stats import Stats


class MemoryHub(NodeHub):
    """A hub for a single process."""

    def __init__(self, node_id: str, stats: Stats | None = None) -> None:
        super().__init__(node_id, stats)
        self.retained_store = Retained(self.stats)
        self._history = History(self.stats, self.local.has_filter)
        self._values: dict[str, str] = {}
        self.queues = MemoryQueues()  # bounds set by create_hub

    # -- the topic space -----------------------------------------------------

    def subscribe(self, topic_filter: str, session: Session) -> bool:
        if not self.local.admits(session, topic_filter=topic_filter):
            return False
        self.local.subscribe(topic_filter, session)
        return True

    def unsubscribe(self, topic_filter: str, session: Session) -> None:
        self.local.unsubscribe(topic_filter, session)

    def publish(self, publication: Publication, *, exclude: str | None = None) -> bool:
        kept = self.retained_store.put(publication) if publication.retain else True
        self._history.add(publication)
        self.local.deliver(publication, exclude)
        return kept

    async def retained(self, topic_filter: str) -> list[Publication]:
        return self.retained_store.matching(topic_filter)

    def retained_count(self) -> int:
        return len(self.retained_store)

    def keep_history(self, prefix: str, limit: int) -> None:
        self._history.rules.add(prefix, limit)

    async def history(self, topic: str) -> list[Publication]:
        return self._history.get(topic)

    @property
    def history_bounds(self) -> History:
        """The history store, whose bounds ``create_hub`` sets from the settings."""
        return self._history

    async def subscribers(self, topic_filter: str) -> list[ClientInfo]:
        return [ClientInfo.of(s, self.node_id) for s in self.local.subscribers(topic_filter)]

    async def filters(self, prefix: str) -> list[str]:
        return [f for f in self.local.filters() if f.startswith(prefix)]

    # -- channels ----------------------------------------------------------------

    def join(self, channel: str, session: Session) -> bool:
        if not self.local.admits(session, channel=channel):
            return False
        self.local.join(channel, session)
        return True

    def leave(self, channel: str, session: Session) -> None:
        self.local.leave(channel, session)

    def broadcast(self, channel: str, message: Outgoing, *, exclude: str | None = None) -> None:
        self.local.broadcast(channel, message, exclude)

    async def members(self, channel: str) -> list[ClientInfo]:
        return [ClientInfo.of(s, self.node_id) for s in self.local.members(channel)]

    async def channels(self, prefix: str) -> list[str]:
        return [c for c in self.local.channel_names() if c.startswith(prefix)]

    # -- one session -----------------------------------------------------------------

    def send_to(self, session_id: str, message: Outgoing) -> None:
        self.local.send_to(session_id, message)

    async def close_session(self, session_id: str, code: int, reason: str) -> bool:
        return self.local.close(session_id, code, reason)

    def touch(self, session: Session) -> None:
        """Presence is the session itself: nothing to refresh."""

    async def clients(self) -> list[ClientInfo]:
        return [ClientInfo.of(s, self.node_id) for s in self.local.sessions.values()]

    # -- names -----------------------------------------------------------------------

    async def claim_name(self, scope: str, name: str, session: Session) -> bool:
        holder = self.local.holder(scope, name)
        if holder is not None and holder is not session:
            return False
        if session.id in self.local.sessions:  # a session that already left holds nothing
            self.local.hold(scope, name, session)
        return True

    async def release_name(self, scope: str, name: str, session: Session) -> None:
        self.local.drop(scope, name, session)

    async def lookup_name(self, scope: str, name: str) -> str | None:
        holder = self.local.holder(scope, name)
        return holder.id if holder is not None else None

    async def names(self, scope: str) -> dict[str, str]:
        return {name: s.id for name, s in self.local.names(scope).items()}

    # -- small shared values -------------------------------------------------------------

    async def set_value(self, key: str, value: str) -> None:
        self._values[key] = value

    async def get_value(self, key: str) -> str | None:
        return self._values.get(key)

    async def delete_value(self, key: str) -> None:
        self._values.pop(key, None)

    async def values(self, prefix: str) -> dict[str, str]:
        return {k: v for k, v in self._values.items() if k.startswith(prefix)}

    # -- queues (hub/queues.py) ------------------------------------------------------------

    def queue_send(self, queue: str, message: QueueMessage, *, sender: Session | None = None) -> bool:
        return self.queues.send(queue, message)

    def queue_consume(self, queue: str, consumer: QueueConsumer, *, session: Session | None = None) -> bool:
        return self.queues.consume(queue, consumer)

    def queue_cancel(self, queue: str, consumer: QueueConsumer) -> None:
        self.queues.cancel(queue, consumer)

    def queue_settle(self, queue: str, messages: Sequence[QueueMessage], *, consumed: bool,
                     avoid: QueueConsumer | None = None) -> None:
        self.queues.settle(queue, messages, consumed=consumed, avoid=avoid)

    def queue_figures(self) -> QueueFigures:
        return self.queues.figures()
