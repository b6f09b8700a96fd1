"""Run wsplex and its peers through the same workloads and print a table of medians.

    .venv/bin/python benchmarks/run.py            # the full comparison (~10 minutes)
    .venv/bin/python benchmarks/run.py --smoke    # a few seconds: proves the harness works

Each run starts a fresh server process pinned to one core and a load generator
(``loadgen.py``, picows on uvloop) pinned to the other, with ``taskset``. The
servers take turns inside every round (the order rotates each round), so a
noisy neighbour slows all of them alike, and the table shows the median over
the rounds. The headline figure is the server's CPU time per delivered message,
read from its process; messages/s and latency depend on the load generator
and the machine as much as on the server. Ratios are against the minimal
picows server (``/`` picows), the fastest Python WebSocket server there is.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers"
PYTHON = sys.executable
SERVER_CORE, LOADGEN_CORE = "0", "1"
#: A realistic chat line for the compressed fan-out, in bytes.
LINE = 400


@dataclass(frozen=True)
class Workload:
    key: str  # row label
    workload: str  # loadgen --workload
    clients: int
    window: int
    servers: tuple[str, ...]
    needs: str | None = None  # the wsplex protocol module it needs
    options: tuple[str, ...] = ()  # more loadgen flags (--deflate, --size)


def workloads(smoke: bool) -> list[Workload]:
    plain = ("wsplex", "picows", "websockets", "aiohttp")
    peers = (*plain, "socketio")
    receivers, idle = (20, 200) if smoke else (500, 10_000)
    return [
        Workload("echo, 1 client, 1 in flight", "echo", 1, 1, plain),
        Workload("echo, 1 client, 16 in flight", "echo", 1, 16, plain),
        Workload("echo, 16 clients, 1 in flight each", "echo", 16, 1, plain),
        Workload(f"chat fan-out to {receivers}, window 4", "chat", receivers, 4, peers, "chat"),
        Workload(f"chat fan-out to {receivers}, window 16", "chat", receivers, 16, peers, "chat"),
        Workload(f"chat fan-out to {receivers}, window 16, {LINE} B lines", "chat", receivers, 16,
                 ("wsplex", "picows"), "chat", ("--size", str(LINE))),
        # permessage-deflate as browsers offer it (SPEC §14): compressed once per line for all
        # receivers; compare its CPU per delivery with the row above.
        Workload(f"chat fan-out to {receivers}, window 16, {LINE} B lines, deflate", "chat", receivers,
                 16, ("wsplex",), "chat", ("--size", str(LINE), "--deflate")),
        Workload("JSONsvc routing, 16 pairs", "route", 16, 1, plain, "jsonsvc"),
        Workload(f"{idle} idle connections", "idle", idle, 0, peers),
        Workload(f"{idle} idle connections, deflate", "idle", idle, 0, ("wsplex",), None, ("--deflate",)),
    ]


def wsplex_protocols() -> list[str]:
    """The built-in protocols this checkout has (chat and JSONsvc land separately)."""
    modules = {"echo": "echo", "chat": "chat", "command": "command", "JSONsvc": "jsonsvc"}
    return [name for name, module in modules.items()
            if importlib.util.find_spec(f"wsplex.protocols.{module}") is not None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if shutil.which("taskset") and os.cpu_count() != 1 else argv


@contextlib.contextmanager
def server_process(name: str, port: int, protocols: str = "") -> Iterator[subprocess.Popen[bytes]]:
    """``name``'s server on ``port``, pinned to the server's core; wsplex runs ``protocols``
    (default: the built-in ones run.py's workloads use)."""
    argv = [PYTHON, str(SERVERS / f"{name}_server.py"), "--port", str(port)]
    if name == "wsplex":
        # Limits stay on, raised past what one benchmark client does from one address.
        argv += ["--protocols", protocols or ",".join(wsplex_protocols()),
                 "--max-messages-per-second", "1000000", "--max-connections-per-ip", "100000"]
    proc = subprocess.Popen(
        pinned(SERVER_CORE, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_listening(proc, port)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {err}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server never listened on {port}")


def run_one(server: str, work: Workload, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    target = server if server in ("wsplex", "socketio") else "plain"
    with server_process(server, port) as proc:
        argv = [
            PYTHON, str(HERE / "loadgen.py"), "--url", f"ws://127.0.0.1:{port}",
            "--server-pid", str(proc.pid), "--target", target, "--workload", work.workload,
            "--clients", str(work.clients), "--window", str(work.window),
            "--warmup", str(args.warmup), "--duration", str(args.duration), *work.options,
        ]
        done = subprocess.run(pinned(LOADGEN_CORE, argv), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed for {server} / {work.key}:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def table(work: Workload, results: dict[str, list[dict[str, Any]]]) -> str:
    """One markdown table per workload; ratios against the minimal picows server."""
    if work.workload == "idle":
        head = "| server | KiB per idle connection | vs picows | connections lost |\n|---|---|---|---|\n"
        base = median([r["kib_per_conn"] for r in results.get("picows", [])])
        rows = []
        for server, runs in results.items():
            kib = median([r["kib_per_conn"] for r in runs])
            ratio = kib / base if kib is not None and base else None
            lost = max(r["lost_connections"] for r in runs)
            rows.append(f"| {server} | {fmt(kib, 1)} | {fmt(ratio)}x | {lost} |")
        return head + "\n".join(rows)
    head = ("| server | server CPU µs/msg | vs picows | msgs/s | p50 µs | p99 µs | loadgen CPU % "
            "| wire B/msg |\n|---|---|---|---|---|---|---|---|\n")
    base = median([r["server_cpu_us_per_msg"] for r in results.get("picows", [])])
    rows = []
    for server, runs in results.items():
        cpu = median([r["server_cpu_us_per_msg"] for r in runs])
        ratio = cpu / base if cpu is not None and base else None
        rate, p50, p99, own, wire = (median([r.get(k) for r in runs]) for k in (
            "msgs_per_s", "p50_us", "p99_us", "loadgen_cpu_pct", "wire_bytes_per_msg"))
        rows.append(f"| {server} | {fmt(cpu)} | {fmt(ratio)}x | {fmt(rate)} "
                    f"| {fmt(p50, 0)} | {fmt(p99, 0)} | {fmt(own, 0)} | {fmt(wire, 0)} |")
    return head + "\n".join(rows)


def machine() -> str:
    """Date, CPU, load and versions: the conditions a table was measured in."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in ("wsplex", "picows", "uvloop", "websockets", "aiohttp", "python-socketio"):
        with contextlib.suppress(PackageNotFoundError):
            versions.append(f"{package} {version(package)}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {cpu}, {os.cpu_count()} cores; "
            f"load average {load}; Python {sys.version.split()[0]}; {', '.join(versions)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, wsplex and picows only")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--only", default="",
                        help="comma-separated workload names (echo,chat,route,idle,stomp)")
    parser.add_argument("--servers", default="", help="comma-separated servers (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write every raw result here")
    args = parser.parse_args(argv)
    chosen_servers = set(filter(None, args.servers.split(",")))
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 0.3, 0.2
        chosen_servers = chosen_servers or {"wsplex", "picows"}
    have = wsplex_protocols()
    plan = []
    for work in workloads(args.smoke):
        if args.only and work.workload not in args.only.split(","):
            continue
        if work.needs and work.needs not in [p.lower() for p in have]:
            print(f"skipping {work.key}: wsplex has no {work.needs} protocol in this checkout", flush=True)
            continue
        servers = [s for s in work.servers if not chosen_servers or s in chosen_servers]
        plan.append((work, servers))

    print(f"start: {machine()}", flush=True)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {w.key: {s: [] for s in ss} for w, ss in plan}
    for round_no in range(args.rounds):
        for work, servers in plan:
            turn = round_no % len(servers)
            for server in servers[turn:] + servers[:turn]:
                result = run_one(server, work, args)
                raw[work.key][server].append(result)
                print(f"round {round_no + 1}/{args.rounds} {work.key:<40} {server:<10} "
                      f"{_summary(result)}", flush=True)

    print(f"\nend: {machine()}")
    print(f"medians of {args.rounds} rounds, {args.duration:g} s measured per run; "
          "server CPU per message delivered to a client\n")
    for work, _servers in plan:
        print(f"### {work.key}\n\n{table(work, raw[work.key])}\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    if not args.only or "stomp" in args.only.split(","):
        run_stomp(args, chosen_servers)
    return 0


def run_stomp(args: argparse.Namespace, chosen: set[str]) -> None:
    """STOMP against RabbitMQ's Web-STOMP (``stomp_bench.py``, its own tables; RabbitMQ is
    skipped with a message when its port is closed)."""
    servers = [s for s in ("wsplex", "rabbitmq") if not args.servers or s in chosen]
    if not servers:
        return
    argv = [PYTHON, str(HERE / "stomp_bench.py"), "--rounds", str(args.rounds),
            "--servers", ",".join(servers)]
    print("\n## STOMP: wsplex against RabbitMQ (stomp_bench.py)\n", flush=True)
    subprocess.run([*argv, *(["--smoke"] if args.smoke else [])], check=True, timeout=3600)


def _summary(result: dict[str, Any]) -> str:
    if "kib_per_conn" in result:
        return f"{result['kib_per_conn']:.1f} KiB/conn"
    cpu = result["server_cpu_us_per_msg"]
    return f"{fmt(cpu)} µs/msg, {result['msgs_per_s']:,.0f} msgs/s, loadgen {result['loadgen_cpu_pct']:.0f}%"


if __name__ == "__main__":
    sys.exit(main())
