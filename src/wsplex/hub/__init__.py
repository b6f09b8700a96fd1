"""Fan-out and shared directory for protocols: see :mod:`wsplex.hub.base`."""

from wsplex.hub.base import ClientInfo, Hub, protocol_topic
from wsplex.hub.memory import MemoryHub

__all__ = ["ClientInfo", "Hub", "MemoryHub", "protocol_topic"]
