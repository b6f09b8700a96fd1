"""Shared fixtures: real servers on free ports, in-process or as a ``wsplex`` process.

No mocked network anywhere: every test talks to a listening socket. A process is
ready when it prints its "listening on" line, so no test sleeps to wait for it.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from wsplex.config import Settings
from wsplex.server import Server

ServerFactory = Callable[..., Awaitable[Server]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ws_url(server: Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


# -- Redis: one real redis-server per test session ---------------------------


class RedisProcess:
    """A ``redis-server`` child on a free port, without persistence; can be killed and restarted."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--protected-mode", "no"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        seen = []
        for line in self.proc.stdout:  # ends when redis-server exits
            seen.append(line)
            if "Ready to accept connections" in line:
                return
        raise AssertionError("redis-server did not start:\n" + "".join(seen))

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None


def flush_redis(url: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the whole test session: ``REDIS_URL`` when set, else our own redis-server."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = RedisProcess()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    """The session's Redis, emptied for this test (keys; channels die with their nodes)."""
    flush_redis(redis_url)
    return redis_url


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    """A Redis of this test's own, for tests that kill and restart it."""
    server = RedisProcess()
    server.start()
    yield server
    server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_hubs: run the test once with the memory hub and once with the Redis hub"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``pytestmark = pytest.mark.both_hubs`` runs a module's ``start_server`` tests on both hubs."""
    if "hub" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_hubs"):
        metafunc.parametrize("hub", ["memory", "redis"], indirect=True)


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> str:
    """Which hub ``start_server`` gives its servers: "memory" unless parametrized."""
    return str(getattr(request, "param", "memory"))


@pytest.fixture
async def start_server(hub: str, request: pytest.FixtureRequest) -> AsyncIterator[ServerFactory]:
    """Start in-process servers: ``await start_server(protocols=("echo",), ...)``.

    On the Redis hub (``hub`` is "redis") every server started in one test is a
    node of the same cluster, on a freshly emptied Redis: start two to test
    across nodes.
    """
    servers: list[Server] = []
    base = Settings(host="127.0.0.1", port=0, shutdown_timeout=2.0)
    if hub == "redis":
        base = replace(base, redis_url=request.getfixturevalue("clean_redis"))

    async def start(**overrides: Any) -> Server:
        settings = replace(base, **overrides)
        server = Server(settings)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@dataclass
class WsplexProcess:
    """A ``python -m wsplex`` child process and what it printed."""

    proc: subprocess.Popen[bytes]
    port: int
    lines: list[str] = field(default_factory=list)
    _partial: bytes = b""
    _matched: int = 0  # lines before this one were consumed by earlier matches

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def read_until(self, pattern: str, timeout: float = 15.0) -> str:
        """Read stderr lines until one matches ``pattern``; fail on exit or timeout.

        Reads the pipe's file descriptor directly: a buffered reader could hold
        lines that ``select`` would then never report.
        """
        regex = re.compile(pattern)
        found = self._search(regex)
        if found is not None:
            return found
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        end = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while time.monotonic() < end:
                if not sel.select(end - time.monotonic()):
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._partial += chunk
                *complete, self._partial = self._partial.split(b"\n")
                self.lines.extend(raw.decode(errors="replace") + "\n" for raw in complete)
                found = self._search(regex)
                if found is not None:
                    return found
        raise AssertionError(f"wsplex never printed {pattern!r}; output:\n{''.join(self.lines)}")

    def _search(self, regex: re.Pattern[str]) -> str | None:
        for index in range(self._matched, len(self.lines)):
            if regex.search(self.lines[index]):
                self._matched = index + 1
                return self.lines[index]
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def spawn() -> Iterator[Callable[..., WsplexProcess]]:
    """Run ``wsplex`` as a user would; waits for its "listening on" line."""
    children: list[WsplexProcess] = []

    def run(*args: str, port: int | None = None, wait: bool = True,
            env: dict[str, str] | None = None) -> WsplexProcess:
        port = free_port() if port is None else port
        argv = [sys.executable, "-m", "wsplex", "--host", "127.0.0.1", "-p", str(port), *args]
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                env=child_env)
        child = WsplexProcess(proc, port)
        children.append(child)
        if wait:
            child.read_until("listening on")
        return child

    yield run
    for child in children:
        child.stop(signal.SIGKILL)
