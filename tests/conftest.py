"""Shared fixtures: real servers on free ports, in-process or as a ``wsplex`` process.

No mocked network anywhere: every test talks to a listening socket. A process is
ready when it prints its "listening on" line, so no test sleeps to wait for it.
The helpers behind the fixtures live in ``support/``.

Every test that starts in-process servers (the ``start_server`` or ``hub``
fixture) runs once per hub, memory and Redis (STYLE.md: one fixture, every
implementation). A test that cannot run on Redis says why:
``@pytest.mark.memory_only("reason")``. ``--hubs memory`` runs one hub only.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest

from support import RedisProcess, ServerFactory, Spawn, WsplexProcess, flush_redis, start_wsplex
from wsplex.config import Settings
from wsplex.server import Server

pytest_plugins = ("pytester",)  # test_conftest.py runs pytest on these fixtures

HUBS = ("memory", "redis")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hubs", default=",".join(HUBS), metavar="memory,redis",
                     help="hubs the start_server tests run on (default: both)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "memory_only(reason): run on the memory hub only; the reason says why not on Redis"
    )
    config.addinivalue_line("markers", "both_hubs: obsolete, every start_server test runs on both hubs")


def _parametrized_by_the_test(metafunc: pytest.Metafunc) -> bool:
    """The test chose its hubs itself: ``@pytest.mark.parametrize("hub", ["redis"], indirect=True)``."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "hub" in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hub" not in metafunc.fixturenames or _parametrized_by_the_test(metafunc):
        return
    hubs = [name for name in metafunc.config.getoption("--hubs").split(",") if name]
    unknown = set(hubs) - set(HUBS)
    if unknown:
        raise pytest.UsageError(f"--hubs: unknown hub {', '.join(sorted(unknown))}")
    marker = metafunc.definition.get_closest_marker("memory_only")
    if marker is not None:
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: memory_only needs a reason")
        hubs = ["memory"]
    metafunc.parametrize("hub", hubs, indirect=True)


# -- Redis: one real redis-server per test session ---------------------------


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


# -- Servers -----------------------------------------------------------------


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> str:
    """Which hub ``start_server`` gives its servers; every test gets each (see the module doc)."""
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


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Run ``wsplex`` as a user would; waits for its "listening on" line."""
    children: list[WsplexProcess] = []

    def run(*args: str, port: int | None = None, wait: bool = True,
            env: dict[str, str] | None = None) -> WsplexProcess:
        child = start_wsplex(*args, port=port, wait=False, env=env)
        children.append(child)
        if wait:
            child.read_until("listening on")
        return child

    yield run
    for child in children:
        child.stop(signal.SIGKILL)
