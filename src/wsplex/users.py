"""``wsplex hash-password``: a password hash for the ``--users`` file.

The password is read from standard input when it is not a terminal (its first
line, without the line ending: ``echo -n s3cret | wsplex hash-password``), else
prompted for twice without echo. The hash goes to stdout, ready to paste as
``alice = "HASH"`` under ``[users]``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from wsplex.app.users import hash_password


def read_password() -> str | None:
    """The password, or None (after saying why on stderr) when there is none."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("wsplex hash-password: the passwords differ", file=sys.stderr)
            return None
    if not password:
        print("wsplex hash-password: empty password", file=sys.stderr)
        return None
    return password


def main(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(
        prog="wsplex hash-password",
        description="Print a password hash (scrypt) for the --users file. The password comes "
        "from standard input (its first line) or, at a terminal, a prompt.",
    ).parse_args(argv)
    password = read_password()
    if password is None:
        return 1
    print(hash_password(password))
    return 0
