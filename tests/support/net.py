"""Addresses of the servers a test starts: free ports, the URL of an in-process server."""

from __future__ import annotations

import socket

from wsplex.server import Server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ws_url(server: Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"
