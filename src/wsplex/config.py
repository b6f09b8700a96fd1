"""Server settings: one frozen value built by the command line (or by tests).

Defaults follow SPEC §1 and §8: sized for a busy public server, so limits stop
abuse without shaping normal traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DEFAULT_PORT = 12352
BUILTIN_PROTOCOLS = ("echo", "chat", "command", "JSONsvc")

Preference = Literal["client", "server"]


@dataclass(frozen=True)
class Settings:
    """Everything the operator can set; see ``wsplex --help`` for each flag."""

    host: str | None = None  # None = every interface
    port: int = DEFAULT_PORT
    debug: bool = False
    protocols: tuple[str, ...] = BUILTIN_PROTOCOLS
    prefer: Preference = "client"
    default_protocol: str | None = None
    protocol_modules: tuple[str, ...] = ()
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 5.0
    shutdown_timeout: float = 5.0

    # Limits (SPEC §8)
    max_message_size: int = 1 << 20
    max_connections: int = 100_000
    max_connections_per_ip: int = 10_000
    max_messages_per_second: int = 10_000
    handshake_timeout: float = 10.0
    max_header_size: int = 16 * 1024
    max_send_buffer: int = 4 << 20
    origins: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None

    # Protocol options
    chat_history: int = 20
    admin_token: str | None = field(default=None, repr=False)

    # Cluster (SPEC §9)
    redis_url: str | None = None
    redis_ttl: float = 15.0  # seconds a dead node's names and presence outlive it (SPEC §9: <= 30)
    workers: int = 1
    node_id: str | None = None
