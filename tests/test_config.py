"""One table of settings (SPEC §15): defaults, the command line, the environment, a TOML file."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from wsplex.cli import _add, build_parser, settings_from_args
from wsplex.config import OPTIONS, Option, Settings


def settings(*argv: str, env: dict[str, str] | None = None) -> Settings:
    return settings_from_args(list(argv), env or {})


def error(capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(SystemExit) as exited:
        settings(*argv, env=env)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsplex: error:"), lines
    return lines[0]


#: Settings fields that are no row of the table: derived from one, or set by tests and the supervisor.
NOT_OPTIONS = {"admin_token", "node_id", "close_timeout", "shutdown_timeout"}


def test_every_option_fills_a_settings_field_with_the_tables_default() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    for option in OPTIONS:
        if not option.derived:
            assert fields[option.field] == option.default, option.name
    assert settings() == Settings()


def test_every_settings_field_is_a_row_of_the_table() -> None:
    rows = {option.field for option in OPTIONS}
    assert {f.name for f in dataclasses.fields(Settings)} - rows == NOT_OPTIONS


def test_help_shows_each_default_once_in_the_users_terms() -> None:
    text = build_parser().format_help()
    assert "(default: None)" not in text and "('" not in text
    assert "(default: 1MiB)" in text and "(default: every interface)" in text
    for option in OPTIONS:
        assert option.long_flag in text


def test_short_flags_and_repeats() -> None:
    assert settings("-p9999").port == 9999
    assert settings("-p", "9999", "-d").debug
    assert settings("--origin", "a", "--origin", "b").origins == ("a", "b")


def test_environment_beats_the_default_and_the_command_line_beats_both() -> None:
    env = {"WSPLEX_PORT": "7000", "WSPLEX_MAX_MESSAGE_SIZE": "64K", "WSPLEX_DEBUG": "true",
           "WSPLEX_ORIGIN": "https://a.example, https://b.example"}
    from_env = settings(env=env)
    assert (from_env.port, from_env.max_message_size, from_env.debug) == (7000, 65536, True)
    assert from_env.origins == ("https://a.example", "https://b.example")
    assert settings("-p", "7001", "--origin", "c", env=env).port == 7001
    assert settings("--origin", "c", env=env).origins == ("c",)


def test_older_variable_names_keep_working() -> None:
    env = {"WSPLEX_REDIS_URL": "redis://h:1/0", "WSPLEX_REDIS_TTL": "5", "WSPLEX_ADMIN_TOKEN": "t"}
    got = settings(env=env)
    assert (got.redis_url, got.redis_ttl, got.admin_token) == ("redis://h:1/0", 5.0, "t")


def test_file_is_below_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "wsplex.toml"
    path.write_text('port = 7100\nmax_message_size = "1MiB"\nprotocols = ["echo", "chat"]\n'
                    'origin = ["https://a.example"]\ndebug = true\nping_interval = 2.5\n')
    got = settings("--config", str(path))
    assert (got.port, got.max_message_size, got.protocols) == (7100, 1 << 20, ("echo", "chat"))
    assert (got.origins, got.debug, got.ping_interval) == (("https://a.example",), True, 2.5)
    assert settings("--config", str(path), env={"WSPLEX_PORT": "7200"}).port == 7200
    assert settings(env={"WSPLEX_CONFIG": str(path)}).port == 7100


@pytest.mark.parametrize(("content", "named"), [
    ("prot = 1\n", "'prot'"), ('port = "high"\n', "port"), ("debug = 3\n", "debug"),
    ("max_message_size = 0\n", "max_message_size"), ("port = [\n", "not valid TOML"),
])
def test_bad_file_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        content: str, named: str) -> None:
    path = tmp_path / "wsplex.toml"
    path.write_text(content)
    line = error(capsys, "--config", str(path))
    assert named in line and str(path) in line


def test_bad_environment_value_is_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert "WSPLEX_PORT" in error(capsys, env={"WSPLEX_PORT": "70000"})
    assert "WSPLEX_DEBUG" in error(capsys, env={"WSPLEX_DEBUG": "maybe"})


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot read --config" in error(capsys, "--config", str(tmp_path / "none.toml"))


def test_a_switch_that_is_on_by_default_has_a_no_flag() -> None:
    """A future row such as ``Option("compression", True, ..., flag=True)`` turns off with --no-."""
    parser = argparse.ArgumentParser()
    _add(parser.add_argument_group("g"), Option("compression", True, "deflate", "g", flag=True))
    assert vars(parser.parse_args(["--no-compression"])) == {"compression": False}
    assert vars(parser.parse_args([])) == {}
