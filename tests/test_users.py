"""``--users FILE``, ``wsplex hash-password`` and ``Context.users.check`` (SPEC §15)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from support import ServerFactory, ws_url
from wsplex.app import Protocol, Session, Users
from wsplex.app.users import PasswordHash, UsersFileError, hash_password


def fast(password: str) -> str:
    """A hash with tiny work factors: the format is under test here, not the cost."""
    return hash_password(password, n=1 << 4, r=1, p=1)


def run(*args: str, given: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wsplex", *args], input=given,
                          capture_output=True, text=True, timeout=60)


def users_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "users.toml"
    path.write_text(body)
    return str(path)


def test_a_hash_describes_itself_and_checks() -> None:
    text = fast("s3cret")
    scheme, n, r, p, salt, digest = text.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16", "1", "1") and salt and digest
    parsed = PasswordHash.parse(text)
    assert parsed.matches("s3cret")
    assert not parsed.matches("s3cret ")
    assert fast("s3cret") != text  # a fresh salt each time


@pytest.mark.parametrize("bad", ["", "md5$x", "scrypt$16$1$1$!!$abc", "scrypt$15$1$1$AAAA$AAAA",
                                 "scrypt$16$1$1$AAAA$", "scrypt$x$1$1$AAAA$AAAA"])
def test_damaged_hashes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        PasswordHash.parse(bad)


def test_the_users_file(tmp_path: Path) -> None:
    alice = fast("wonderland")
    users = Users.load(users_file(tmp_path, f'[users]\nalice = "{alice}"\n"bob smith" = "{alice}"\n'))
    assert users.enabled and len(users) == 2 and "alice" in users
    assert users.check("alice", "wonderland")
    assert users.check("bob smith", "wonderland")
    assert not users.check("alice", "Wonderland")
    assert not users.check("carol", "wonderland")
    nobody = Users()
    assert not nobody.enabled and not nobody.check("alice", "wonderland")


@pytest.mark.parametrize(("body", "message"), [
    ("[users\n", "not valid TOML"),
    ("alice = 'x'\n", "expected one [users] table"),
    ("[users]\nalice = 1\n", "user 'alice': the hash must be a string"),
    ("[users]\nalice = 'plain'\n", "user 'alice': not a hash made by wsplex hash-password"),
])
def test_bad_users_files_say_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(UsersFileError, match=message.replace("[", r"\[")):
        Users.load(users_file(tmp_path, body))


def test_hash_password_reads_stdin_and_the_server_takes_the_file(tmp_path: Path) -> None:
    made = run("hash-password", given="open sesame\n")
    assert made.returncode == 0, made.stderr
    digest = made.stdout.strip()
    assert PasswordHash.parse(digest).matches("open sesame")
    path = users_file(tmp_path, f'[users]\nali = "{digest}"\n')
    assert Users.load(path).check("ali", "open sesame")
    empty = run("hash-password", given="")
    assert empty.returncode == 1 and "empty password" in empty.stderr


def test_a_bad_users_file_stops_the_server_with_one_line(tmp_path: Path) -> None:
    result = run("--users", users_file(tmp_path, "[users]\nalice = 'plain'\n"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "user 'alice'" in result.stderr
    missing = run("--users", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "cannot read --users" in missing.stderr


class Login(Protocol):
    """A protocol that authenticates as a plugin would: ``NAME PASSWORD`` in, ``ok``/``no`` out."""

    name = "login"
    description = "Checks NAME PASSWORD against --users."
    help = "Send NAME PASSWORD."

    async def on_message(self, session: Session, message: str | bytes) -> None:
        assert isinstance(message, str)
        name, _, password = message.partition(" ")
        users = self.context.users
        good = await asyncio.to_thread(users.check, name, password)  # scrypt off the loop
        session.send_text(f"{'ok' if good else 'no'} (users file: {users.enabled})")


@pytest.mark.memory_only("Context.users reads a file; the hub plays no part")
async def test_a_protocol_checks_credentials_through_its_context(
        start_server: ServerFactory, tmp_path: Path) -> None:
    path = users_file(tmp_path, f'[users]\nalice = "{fast("pw")}"\n')
    with_file = await start_server(protocols=("login",), protocol_modules=("test_users:Login",),
                                   users_file=path)
    without = await start_server(protocols=("login",), protocol_modules=("test_users:Login",))
    async with connect(ws_url(with_file), subprotocols=["login"]) as ws:  # type: ignore[list-item]
        await ws.send("alice pw")
        assert await ws.recv() == "ok (users file: True)"
        await ws.send("alice nope")
        assert await ws.recv() == "no (users file: True)"
    async with connect(ws_url(without), subprotocols=["login"]) as ws:  # type: ignore[list-item]
        await ws.send("alice pw")
        assert await ws.recv() == "no (users file: False)"
