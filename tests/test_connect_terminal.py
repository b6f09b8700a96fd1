"""``wsplex connect`` at a terminal: a real one, tmux's (scripts/test.sh installs tmux).

The prompt is prompt-toolkit's: typed lines are sent, received messages are
printed above the prompt, the up arrow recalls the last line, Ctrl-D closes
with 1000 and exit status 0.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from support import Spawn


class Terminal:
    """One tmux session on a server socket of its own, running one command."""

    def __init__(self, command: str) -> None:
        self.socket = f"wsplex-test-{uuid.uuid4().hex[:8]}"
        # The shell keeps the pane open after the command, to show its exit status.
        self.tmux("new-session", "-d", "-x", "120", "-y", "30",
                  f"{command}; echo EXIT=$?; read done")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait_for(self, text: str, count: int = 1, timeout: float = 20.0) -> str:
        """The screen once ``text`` is on it ``count`` times; fail after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            if time.monotonic() > end:
                raise AssertionError(f"never saw {text!r} x{count}; screen:\n{screen}")
            time.sleep(0.05)  # polling the screen: tmux has no event to wait on

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def test_typing_at_the_prompt(spawn: Spawn, terminal: list[Terminal]) -> None:
    server = spawn("--protocols", "echo")
    command = shlex.join([sys.executable, "-m", "wsplex", "connect", server.url, "--protocol", "echo"])
    term = Terminal(command)
    terminal.append(term)
    term.wait_for("protocol: echo")
    term.wait_for("\n>")  # the prompt (tmux drops its trailing space)
    term.keys("hello there", "Enter")
    term.wait_for("hello there", count=2)  # the line typed, and the echo above the prompt
    term.keys("Up", "Enter")  # history: the same line again
    term.wait_for("hello there", count=4)
    term.keys("C-d")
    screen = term.wait_for("EXIT=")
    assert "closed: 1000 (OK)" in screen and "EXIT=0" in screen
