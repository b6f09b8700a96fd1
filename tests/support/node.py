"""A JavaScript client library driven from pytest: a Node script in ``tests/js``
that reads one JSON command per line on stdin and writes one JSON event per line
on stdout (``stomp_client.mjs``, ``mqtt_client.mjs``, ``wamp_client.mjs``).

``scripts/test.sh`` installs the scripts' ``node_modules`` (``npm ci`` in ``tests/js``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent.parent / "js"


@cache
def node_command() -> list[str]:
    """``node``, with the flag that gives Node 20 its WebSocket (later versions have it built in)."""
    built_in = subprocess.run(["node", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                              check=False).returncode == 0
    return ["node"] if built_in else ["node", "--experimental-websocket"]


class NodeClient:
    """One running Node client script: commands in, events out."""

    def __init__(self, process: asyncio.subprocess.Process, name: str, timeout: float) -> None:
        self.process = process
        self.name = name
        self.timeout = timeout

    @classmethod
    async def start(cls, script: str, *args: str, timeout: float = 10.0) -> NodeClient:
        """Run ``tests/js/SCRIPT ARGS...`` with pipes on stdin and stdout."""
        process = await asyncio.create_subprocess_exec(
            *node_command(), str(SCRIPTS / script), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(process, script, timeout)

    async def command(self, op: str, **arguments: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}).encode() + b"\n")
        await self.process.stdin.drain()

    async def next(self) -> dict[str, Any]:
        """The next event, whatever its kind."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), self.timeout)
        assert line, f"the {self.name} client exited"
        event: dict[str, Any] = json.loads(line)
        return event

    async def event(self, kind: str) -> dict[str, Any]:
        """The next event, which must be of ``kind``."""
        event = await self.next()
        assert event["event"] == kind, event
        return event

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
