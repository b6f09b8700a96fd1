"""``deploy/``: the nginx configuration run for real in front of two nodes, the systemd unit read.

nginx is Debian's (``scripts/test.sh`` installs it when missing), started with
a temporary prefix, its own pid file and logs, on a free port: nothing of the
machine's nginx is touched.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets import Subprotocol
from websockets.asyncio.client import ClientConnection, connect

from support import Spawn
from support.net import free_port
from support.rawws import RawClient

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TIMEOUT = 15.0
TOKEN = "deploy-test-token"
#: Written by the client as if a proxy before nginx had seen it: nginx appends its peer.
CLIENT = "203.0.113.7"


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    assert found, "nginx is not installed: scripts/test.sh installs Debian's nginx"
    return found


def nginx_config(prefix: Path, port: int, nodes: list[int]) -> Path:
    """deploy/nginx.conf with this test's addresses, inside a main config of temporary paths."""
    site = (DEPLOY / "nginx.conf").read_text()
    for placeholder, node in zip(("10.0.0.11:12352", "10.0.0.12:12352"), nodes, strict=True):
        assert placeholder in site
        site = site.replace(placeholder, f"127.0.0.1:{node}")
    assert "listen 80;" in site
    (prefix / "wsplex.conf").write_text(site.replace("listen 80;", f"listen 127.0.0.1:{port};"))
    for folder in ("logs", "temp"):
        (prefix / folder).mkdir()
    main = prefix / "nginx.conf"
    main.write_text(f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    include {prefix}/wsplex.conf;
}}
""")
    return main


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[Path, int, list[int]]]:
    """A started nginx (the folder it runs in, its port), and the ports its nodes must use."""
    port, nodes = free_port(), [free_port(), free_port()]
    config = nginx_config(tmp_path, port, nodes)
    command = [nginx_binary(), "-p", str(tmp_path), "-c", str(config)]
    # Daemonised, nginx returns once it listens: the start is the synchronisation.
    subprocess.run(command, check=True, capture_output=True, timeout=TIMEOUT)
    yield tmp_path, port, nodes
    subprocess.run([*command, "-s", "stop"], check=False, capture_output=True, timeout=TIMEOUT)


async def healthz(port: int) -> tuple[int, dict[str, str]]:
    client = await RawClient.open(port)
    client.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    response = await client.read_response()
    await client.close()
    return response.status, json.loads(response.body)


async def ask(ws: ClientConnection, command: str) -> str:
    await ws.send(command)
    reply = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(reply, str)
    return reply


async def test_nginx_in_front_of_two_nodes(nginx: tuple[Path, int, list[int]], spawn: Spawn,
                                           clean_redis: str) -> None:
    _, port, nodes = nginx
    for node in nodes:
        spawn("--protocols", "echo,command", "--redis", clean_redis, "--trusted-proxy",
              "127.0.0.1/32", port=node, env={"WSPLEX_ADMIN_TOKEN": TOKEN})
    seen = set()
    for _ in range(2):  # round robin: one request to each node
        status, body = await healthz(port)
        assert (status, body["status"]) == (200, "ok")
        seen.add(body["node"])
    assert len(seen) == 2
    url = f"ws://127.0.0.1:{port}/"
    forwarded = {"X-Forwarded-For": CLIENT}
    async with connect(url, subprotocols=[Subprotocol("echo")]) as one, \
            connect(url, subprotocols=[Subprotocol("echo")]) as two, \
            connect(url, subprotocols=[Subprotocol("command")], additional_headers=forwarded) as op:
        assert one.subprotocol == "echo" and op.subprotocol == "command"
        await one.send("through nginx")
        assert await asyncio.wait_for(two.recv(), TIMEOUT) == "through nginx"
        assert "authenticated" in await ask(op, f"auth {TOKEN}")
        clients = json.loads(await ask(op, "clients --json"))["clients"]
        remotes = {client["protocol"]: client["remote"] for client in clients}
        assert remotes["command"] == CLIENT  # nginx's hop (127.0.0.1) is trusted and skipped
        assert remotes["echo"].startswith("127.0.0.1")


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as sections of keys to their values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a setting outside any section: {line!r}"
        key, equals, value = line.partition("=")
        assert equals and key.strip() == key and key.isalnum(), f"not KEY=VALUE: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def test_the_systemd_unit() -> None:
    unit = unit_sections((DEPLOY / "wsplex.service").read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["ExecStart"][0].split()[0].endswith("/wsplex")
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # certificate and --users reloads
    assert service["KillSignal"] == ["SIGTERM"]
    assert int(service["LimitNOFILE"][0]) >= 100_000
    assert service["Restart"] == ["on-failure"]
    assert service["EnvironmentFile"][0].lstrip("-").startswith("/etc/wsplex/")
    assert int(service["TimeoutStopSec"][0]) > 10 + 10  # a drain of 10 s, then up to 10 s to close
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_reads_the_unit_without_a_complaint(tmp_path: Path) -> None:
    """``systemd-analyze verify`` where systemd is installed (it warns on unknown keys and
    bad values); elsewhere the parse above is the check."""
    analyze = shutil.which("systemd-analyze")
    text = (DEPLOY / "wsplex.service").read_text()
    wsplex = Path(sys.executable).with_name("wsplex")  # ExecStart must exist to verify
    copy = tmp_path / "wsplex.service"
    copy.write_text(text.replace("/opt/wsplex/bin/wsplex", str(wsplex)))
    if analyze is None:
        assert unit_sections(copy.read_text())["Service"]["ExecStart"] == [str(wsplex)]
        return
    checked = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                             timeout=TIMEOUT, check=False)
    assert (checked.returncode, checked.stderr) == (0, "")
