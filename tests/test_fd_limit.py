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
def limits() -> Iterator[tuple[int, int]]:
    """This process's open-files limits; the soft one is lowered to 96 for the test
    (opening nothing) and put back after. The hard one is never touched: lowering it
    cannot be undone without privileges."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))
    try:
        yield 96, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_first(limits: tuple[int, int]) -> None:
    assert connection_cap(200) == 200
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 200 + FD_HEADROOM


def test_the_cap_follows_the_hard_limit(limits: tuple[int, int], caplog: pytest.LogCaptureFixture) -> None:
    _, hard = limits
    if hard == resource.RLIM_INFINITY:  # nothing caps the soft limit: the cap is as asked
        assert connection_cap(1_000_000) == 1_000_000
        assert caplog.text == ""
        return
    with caplog.at_level(logging.WARNING, logger="wsplex.server"):
        assert connection_cap(hard + 1000) == hard - FD_HEADROOM
    assert f"serving at most {hard - FD_HEADROOM} connections" in caplog.text
    caplog.clear()
    assert connection_cap(10) == 10  # within the limit: as asked, no warning
    assert caplog.text == ""
