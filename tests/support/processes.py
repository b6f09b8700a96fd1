"""``wsplex`` run as a user runs it: a child process, read until it says what a test waits for."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from support.net import free_port
from wsplex.server import Server

#: ``start_server``: ``await start_server(protocols=("echo",), ...)`` gives a started Server.
ServerFactory = Callable[..., Awaitable[Server]]


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


#: ``spawn``: ``spawn("--protocols", "echo")`` gives a running ``wsplex`` process.
Spawn = Callable[..., WsplexProcess]


def start_wsplex(*args: str, port: int | None = None, wait: bool = True,
                 env: dict[str, str] | None = None) -> WsplexProcess:
    """``python -m wsplex --host 127.0.0.1 -p PORT ARGS``; waits for "listening on" unless told not to."""
    port = free_port() if port is None else port
    argv = [sys.executable, "-m", "wsplex", "--host", "127.0.0.1", "-p", str(port), *args]
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=child_env)
    child = WsplexProcess(proc, port)
    if wait:
        try:
            child.read_until("listening on")
        except BaseException:
            child.stop(signal.SIGKILL)
            raise
    return child
