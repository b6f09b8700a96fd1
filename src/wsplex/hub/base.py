"""What both hubs share: this node's bookkeeping, its lifecycle, and session ids."""

from __future__ import annotations

from collections.abc import Mapping

from wsplex.app.hub import Hub
from wsplex.app.protocol import Protocol
from wsplex.app.session import Session
from wsplex.hub.local import Local
from wsplex.stats import Stats


class NodeHub(Hub):
    """A hub with a :class:`Local` view of this node; the server drives the lifecycle."""

    def __init__(self, node_id: str, stats: Stats | None = None) -> None:
        self.node_id = node_id
        self.stats = stats if stats is not None else Stats()
        self.local = Local(self.stats)
        self._session_counter = 0

    def bind(self, protocols: Mapping[str, Protocol]) -> None:
        """The protocols that render publications for their sessions (by name)."""
        self.local.receivers = protocols

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Connect to the backing store, if any."""

    async def stop(self) -> None:
        """Release the backing store, if any."""

    async def sync(self) -> None:
        """Wait until everything this node has queued so far reached the backing store."""

    @property
    def healthy(self) -> bool:
        """False while the backing store is unreachable (``/healthz`` answers 503)."""
        return True

    @property
    def health_problem(self) -> str | None:
        """Why the node is not :attr:`healthy`, in a few words for ``/healthz``; None when it is."""
        return None

    def new_session_id(self) -> str:
        """An id no other session of the cluster has: ``"1"``, ``"2"``... on one node."""
        self._session_counter += 1
        return str(self._session_counter)

    # -- sessions of this node -------------------------------------------------

    @property
    def sessions(self) -> Mapping[str, Session]:
        return self.local.sessions

    def attach(self, session: Session) -> None:
        """A session connected to this node."""
        self.local.attach(session)

    def holder_here(self, scope: str, name: str) -> str | None:
        holder = self.local.holder(scope, name)
        return holder.id if holder is not None else None

    def detach(self, session: Session) -> None:
        """A session left this node: it leaves every filter, channel and name it had."""
        self.local.detach(session)
