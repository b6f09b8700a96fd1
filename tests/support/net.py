"""Addresses of the servers a test starts: free ports, the URL of an in-process server,
and a plain HTTP GET of one of their endpoints."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

from wsplex.server import Server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ws_url(server: Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def http_get(url: str) -> tuple[int, str]:
    """``(status, body)`` of a GET, an error status included (``/healthz``'s 503)."""

    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    return await asyncio.to_thread(fetch)
