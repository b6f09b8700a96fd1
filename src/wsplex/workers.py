"""``--workers N``: N server processes on one port, one parent watching them.

Each worker is a whole wsplex node (its own event loop, its own Redis hub
node id) listening with SO_REUSEPORT, so the kernel spreads new connections
over them; Redis makes them one server (SPEC §9). The parent only starts the
workers, restarts one that dies (a worker that exits with status 0, after
``killserver``, stops them all), and passes SIGTERM/SIGINT on so shutdown stays
graceful (every connection closed with 1001).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from wsplex.config import Settings

#: Set in the environment of the processes ``--workers`` starts: the worker's number.
WORKER_ENV = "WSPLEX_WORKER"

log = logging.getLogger("wsplex.workers")

#: A worker that dies sooner than this after starting, QUICK_FAILURES times in a
#: row, is not restarted again: the cause (a port in use, a bad plugin) would
#: kill the next one too.
MIN_UPTIME = 5.0
QUICK_FAILURES = 3
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def reserve_port(settings: Settings) -> socket.socket:
    """Bind the port once in the parent, so ``-p 0`` gives every worker the same port.

    The socket never listens, so the kernel never hands it a connection; it
    holds the port until the workers have bound it too.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in (settings.host or "") else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host or "", settings.port))
    return sock


def start_worker(argv: list[str], port: int, number: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, WORKER_ENV: str(number)}
    return subprocess.Popen([sys.executable, "-m", "wsplex", *argv, "-p", str(port)], env=env,
                            preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the parent dies, even by SIGKILL, so none is orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: workers outlive a parent killed without a chance to stop them


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run ``settings.workers`` workers until a signal; the exit status for the parent."""
    try:
        reserved = reserve_port(settings)
    except OSError as exc:
        log.error("cannot listen on port %s: %s", settings.port, exc.strerror or exc)
        return 1
    port = reserved.getsockname()[1]
    stopping: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if stopping:  # a second signal: pass it on now, it cuts the workers' --drain-seconds short
            for proc in workers.values():
                if proc.poll() is None:
                    proc.send_signal(signum)
        stopping.append(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    workers = {n: start_worker(argv, port, n) for n in range(1, settings.workers + 1)}

    def reload(signum: int, frame: FrameType | None) -> None:  # each worker reloads its own files
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, reload)
    started = dict.fromkeys(workers, time.monotonic())
    quick = dict.fromkeys(workers, 0)  # deaths in a row soon after starting
    log.info("wsplex supervising %d workers on port %d", settings.workers, port)
    status = 0
    try:
        while not stopping:
            for number, proc in list(workers.items()):
                code = proc.poll()
                if code is None or stopping:
                    continue
                if code == 0:  # it stopped on its own: killserver, a shutdown of the whole server
                    log.info("worker %d stopped; stopping the others", number)
                    stopping.append(signal.SIGTERM)
                    break
                quick[number] = quick[number] + 1 if time.monotonic() - started[number] < MIN_UPTIME else 0
                if quick[number] >= QUICK_FAILURES:
                    log.error("worker %d keeps exiting at start (status %d); stopping", number, code)
                    stopping.append(signal.SIGTERM)
                    status = 1
                    break
                log.warning("worker %d exited with status %d; starting another", number, code)
                workers[number], started[number] = start_worker(argv, port, number), time.monotonic()
            if not stopping:
                time.sleep(0.5)  # a signal or a dead worker is seen within half a second
    finally:
        reserved.close()
        _stop_all(list(workers.values()), stopping[0] if stopping else signal.SIGTERM,
                  settings.drain_seconds)
    return status


def _stop_all(procs: list[subprocess.Popen[bytes]], signum: int, drain: float) -> None:
    """Pass the signal on and wait; a worker still there after its drain and shutdown timeout
    is killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signum)
    deadline = time.monotonic() + drain + 15.0
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
