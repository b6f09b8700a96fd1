"""The server: transport, hub, protocols and HTTP routes wired together."""

from wsplex.transport.connection import Server, install_event_loop, tls_context

__all__ = ["Server", "install_event_loop", "tls_context"]
