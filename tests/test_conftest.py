"""The fixtures' own rules: every hub by default, ``memory_only`` with a reason, ``--hubs``."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

TESTS = '''
import pytest

def test_any(hub):
    pass

@pytest.mark.memory_only("inspects the memory hub's dictionaries")
def test_memory(hub):
    pass

@pytest.mark.parametrize("hub", ["redis"], indirect=True)
def test_redis(hub):
    assert hub == "redis"

def test_no_server():
    pass
'''


def setup(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    setup(pytester)
    pytester.makepyfile(test_sample=TESTS)
    result = pytester.runpytest("--collect-only", "-q", *args)
    return [line.split("::")[1] for line in result.outlines if "::" in line]


def test_every_hub_by_default_and_the_opt_outs(pytester: pytest.Pytester) -> None:
    assert collected(pytester) == ["test_any[memory]", "test_any[redis]", "test_memory[memory]",
                                   "test_redis[redis]", "test_no_server"]


def test_hubs_option_picks_one(pytester: pytest.Pytester) -> None:
    assert collected(pytester, "--hubs", "memory") == [
        "test_any[memory]", "test_memory[memory]", "test_redis[redis]", "test_no_server"]


def test_memory_only_needs_a_reason(pytester: pytest.Pytester) -> None:
    setup(pytester)
    pytester.makepyfile(test_sample="import pytest\n\n@pytest.mark.memory_only\n"
                                    "def test_x(hub):\n    pass\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*memory_only needs a reason*"])
