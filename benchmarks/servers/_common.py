"""What every reference server shares: the command line and the descriptor limit.

Each reference server is what a user would write with that library in a few
lines, on uvloop, with the same three endpoints the load generator drives:

* ``/echo``: every message goes to every echo client, the sender included
  (wsplex's echo, SPEC §2); with one client it is a plain echo.
* ``/chat?name=N``: a text message goes to every OTHER client as ``[N] text``.
* ``/route``: JSONsvc's routing in its simplest form: ``{"from":"a"}``
  registers ``a``; ``{"from":"a","to":"b"}>data`` is delivered to ``b`` as is.
"""

from __future__ import annotations

import argparse
import resource


def parse_port() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    return int(parser.parse_args().port)


def raise_fd_limit() -> None:
    """10,000 idle connections need 10,000 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def route_header(payload: bytes, loads: object) -> tuple[str | None, str | None]:
    """``from`` and ``to`` of a ``{header}>data`` message (None when absent or bad)."""
    head = payload.split(b">", 1)[0]
    try:
        header = loads(head)  # type: ignore[operator]
    except ValueError:
        return None, None
    if not isinstance(header, dict):
        return None, None
    return header.get("from"), header.get("to")
