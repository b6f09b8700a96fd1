"""Running out of file descriptors is never silent (issue 17 item 9): the connection
cap follows the open-files limit, so a client past it gets 503 "server full" (as
tests/test_limits.py shows for --max-connections) instead of a dropped accept."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator

import pytest

from wsplex.server import FD_HEADROOM, connection_cap

pytestmark = pytest.mark.memory_only("a process limit: no hub involved")


@pytest.fixture
def soft_limit() -> Iterator[int]:
    """This process's soft open-files limit lowered to 96 for the test (opening nothing)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))
    try:
        yield 96
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_cap_follows_the_open_files_limit(soft_limit: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wsplex.server"):
        assert connection_cap(100_000) == soft_limit - FD_HEADROOM
    assert "serving at most 32 connections" in caplog.text
    caplog.clear()
    assert connection_cap(10) == 10  # within the limit: as asked, no warning
    assert caplog.text == ""
