"""The ``--users`` file and password checks, for protocols that authenticate.

The file is TOML with one table, ``[users]``, of names to password hashes::

    [users]
    alice = "scrypt$16384$8$1$<salt>$<hash>"

A hash is self-describing, ``scrypt$N$r$p$SALT$HASH`` (salt and hash in
unpadded base64), made by ``wsplex hash-password``: :mod:`hashlib`'s scrypt
(RFC 7914), so no dependency, and the parameters travel with each hash so
they can be raised later without breaking older entries.

A protocol asks ``self.context.users.check(name, password)``. Without
``--users``, :attr:`Users.enabled` is False and a protocol accepts anyone, as
it did before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field

SCHEME = "scrypt"
#: Work factors of new hashes: 16 MiB of memory and about 50 ms per check.
N, R, P = 1 << 14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
#: scrypt's memory is 128 * N * r bytes; allow a little above the largest we accept.
_MAX_N = 1 << 20
_MAXMEM = 128 * _MAX_N * 8 + (1 << 20)


class UsersFileError(ValueError):
    """A ``--users`` file that cannot be used; the message is what the operator sees."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P,
                  salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$SALT$HASH`` for ``password``, with a fresh random salt."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                            maxmem=_MAXMEM, dklen=HASH_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True)
class PasswordHash:
    """A parsed ``scrypt$N$r$p$SALT$HASH``."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ValueError("not a hash made by wsplex hash-password (scrypt$N$r$p$SALT$HASH)")
        try:
            n, r, p = (int(part) for part in parts[1:4])
            salt, digest = _unb64(parts[4]), _unb64(parts[5])
        except ValueError:
            raise ValueError("a damaged scrypt hash (bad number or base64)") from None
        if n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= 32 or not 1 <= p <= 16 or not digest:
            raise ValueError(f"scrypt parameters out of range: N={n} r={r} p={p}")
        return cls(n, r, p, salt, digest)

    def matches(self, password: str) -> bool:
        """True when ``password`` hashes to this digest (compared in constant time)."""
        digest = hashlib.scrypt(password.encode("utf-8"), salt=self.salt, n=self.n, r=self.r,
                                p=self.p, maxmem=_MAXMEM, dklen=len(self.digest))
        return hmac.compare_digest(digest, self.digest)


#: Checked for names not in the file, so an unknown name costs as much as a wrong password.
_NOBODY = PasswordHash.parse(hash_password("", salt=b"\0" * SALT_BYTES))


@dataclass(frozen=True)
class Users:
    """The users of the ``--users`` file; empty and not :attr:`enabled` without one."""

    hashes: Mapping[str, PasswordHash] = field(default_factory=dict)
    enabled: bool = False

    @classmethod
    def load(cls, path: str) -> Users:
        """Read a ``--users`` file; any problem raises :class:`UsersFileError` naming it."""
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except OSError as exc:
            raise UsersFileError(f"cannot read --users {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsersFileError(f"{path}: not valid TOML: {exc}") from None
        table = document.get("users")
        extra = sorted(set(document) - {"users"})
        if not isinstance(table, dict) or extra:
            raise UsersFileError(f"{path}: expected one [users] table of name = \"HASH\"")
        hashes: dict[str, PasswordHash] = {}
        for name, value in table.items():
            if not isinstance(value, str):
                raise UsersFileError(f"{path}: user {name!r}: the hash must be a string")
            try:
                hashes[name] = PasswordHash.parse(value)
            except ValueError as exc:
                raise UsersFileError(f"{path}: user {name!r}: {exc}") from None
        return cls(hashes, enabled=True)

    def take(self, other: Users) -> None:
        """Hold ``other``'s users from now on (SIGHUP reloads the file).

        In place, so every protocol that kept this object (or its ``check``)
        sees them; one attribute store, so a check running in a thread sees
        the old table or the new one, never a mix.
        """
        object.__setattr__(self, "hashes", other.hashes)

    def __contains__(self, name: object) -> bool:
        return name in self.hashes

    def __len__(self) -> int:
        return len(self.hashes)

    def check(self, name: str, password: str) -> bool:
        """True when ``name`` is in the file and ``password`` is its password.

        Takes about as long for an unknown name as for a wrong password, so the
        time does not tell which names exist. Costs one scrypt (tens of
        milliseconds of CPU): a protocol that checks on a hot path should run it
        in a thread (``await asyncio.to_thread(users.check, name, password)``).
        """
        known = self.hashes.get(name)
        if known is None:
            _NOBODY.matches(password)
            return False
        return known.matches(password)
