"""The in-memory hub: one process, the embedded default.

Every operation is local, so fan-out goes straight to :meth:`Hub.deliver`, the
same step the Redis hub's listener calls for messages from other nodes.
"""

from __future__ import annotations

from collections import deque

from wsplex.app.hub import ClientInfo, Hub
from wsplex.app.outgoing import Outgoing
from wsplex.app.session import Session


class MemoryHub(Hub):
    """A hub for a single process; the directory is a few dicts."""

    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self._names: dict[str, dict[str, Session]] = {}
        self._history: dict[str, deque[str]] = {}
        self._values: dict[str, str] = {}

    def detach(self, session: Session) -> None:
        super().detach(session)
        for holders in self._names.values():
            for name in [n for n, s in holders.items() if s is session]:
                del holders[name]

    # -- fan-out -------------------------------------------------------------

    def publish(self, topic: str, message: Outgoing, *, exclude: str | None = None) -> None:
        self.deliver(topic, message, exclude)

    def send_to(self, session_id: str, message: Outgoing) -> None:
        self.deliver_to(session_id, message)

    # -- control -------------------------------------------------------------

    async def close_session(self, session_id: str, code: int, reason: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        session.close(code, reason)
        return True

    async def clients(self) -> list[ClientInfo]:
        return [ClientInfo.of(s, self.node_id) for s in self.sessions.values()]

    async def members(self, topic: str) -> list[ClientInfo]:
        return [ClientInfo.of(s, self.node_id) for s in self.local_subscribers(topic)]

    async def topics(self, prefix: str) -> list[str]:
        return [topic for topic in self._topics if topic.startswith(prefix)]

    # -- names ---------------------------------------------------------------

    async def claim_name(self, scope: str, name: str, session: Session) -> bool:
        holders = self._names.setdefault(scope, {})
        holder = holders.get(name)
        if holder is not None and holder is not session:
            return False
        holders[name] = session
        return True

    async def release_name(self, scope: str, name: str, session: Session) -> None:
        holders = self._names.get(scope, {})
        if holders.get(name) is session:
            del holders[name]

    async def lookup_name(self, scope: str, name: str) -> str | None:
        holder = self._names.get(scope, {}).get(name)
        return holder.id if holder is not None else None

    async def names(self, scope: str) -> dict[str, str]:
        return {name: s.id for name, s in self._names.get(scope, {}).items()}

    # -- shared state --------------------------------------------------------

    async def append_history(self, key: str, item: str, limit: int) -> None:
        if limit <= 0:
            return
        items = self._history.get(key)
        if items is None or items.maxlen != limit:
            items = self._history[key] = deque(items or (), maxlen=limit)
        items.append(item)

    async def history(self, key: str) -> list[str]:
        return list(self._history.get(key, ()))

    async def set_value(self, key: str, value: str) -> None:
        self._values[key] = value

    async def get_value(self, key: str) -> str | None:
        return self._values.get(key)

    async def delete_value(self, key: str) -> None:
        self._values.pop(key, None)

    async def values(self, prefix: str) -> dict[str, str]:
        return {k: v for k, v in self._values.items() if k.startswith(prefix)}
