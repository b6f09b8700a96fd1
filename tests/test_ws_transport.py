"""The transport's own rules: the picows range it was checked against, its workarounds."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from wsplex.transport.picows_workarounds import (
    TESTED,
    UntestedPicows,
    check_picows_version,
    normalise_connection_header,
    parser_error,
)


def test_the_installed_picows_is_in_the_tested_range() -> None:
    assert check_picows_version()  # the venv's picows: the server starts


@pytest.mark.parametrize("version", ["2.3.0", "2.4.0", "3.0", "1.19.2"])
def test_an_untested_picows_is_refused_by_name(version: str) -> None:
    with pytest.raises(UntestedPicows, match=rf"picows {version} is installed.*picows>=2\.3\.1,<2\.4"):
        check_picows_version(version)


def test_the_range_is_the_one_pyproject_pins() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    low, high = (".".join(map(str, part)) for part in TESTED)
    assert f"picows>={low},<{high}" in pyproject["project"]["dependencies"]


def test_parser_error_is_read_from_picows_log_call() -> None:
    assert parser_error("WS parser error: %s, initiate disconnect", ((1002, "bad opcode"),)) == (
        1002, "bad opcode")
    assert parser_error("something else", ((1002, "x"),)) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("keep-alive, Upgrade", "upgrade"), ("Upgrade", "Upgrade"), ("keep-alive", "keep-alive")],
)
def test_connection_header_with_upgrade_among_tokens(value: str, expected: str) -> None:
    """RFC 6455 §4.2.1: the header must *include* "Upgrade"; picows wants it alone."""
    headers = CIMultiDict({"Connection": value})
    normalise_connection_header(headers)
    assert headers["Connection"] == expected
