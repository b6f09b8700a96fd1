"""Plugins loaded as the README says: ``--protocol-module`` from the package's folder
with the ``wsplex`` console script, ``--app-dir``, and entry point names."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from support import WsplexProcess, free_port
from support.sample_protocols import Shout
from wsplex.app.registry import ProtocolLoadError, load_named

SAMPLE = Path(__file__).parent / "support" / "sample_protocols.py"
GUIDE = Path(__file__).parent.parent / "docs" / "plugins.md"
WSPLEX = str(Path(sys.executable).parent / "wsplex")  # the console script, not python -m


def make_package(folder: Path) -> None:
    """``mypkg.shout:Shout`` in ``folder``, as a plugin author has it before installing it."""
    (folder / "mypkg").mkdir()
    (folder / "mypkg" / "__init__.py").write_text("")
    (folder / "mypkg" / "shout.py").write_text(SAMPLE.read_text())


def served_protocols(cwd: Path, *args: str) -> list[str]:
    port = free_port()
    proc = subprocess.Popen([WSPLEX, "--host", "127.0.0.1", "-p", str(port), "--protocols", "echo",
                             "--protocol-module", "mypkg.shout:Shout", *args],
                            cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    child = WsplexProcess(proc, port)
    try:
        child.read_until("listening on")
        with urllib.request.urlopen(child.http + "/protocols", timeout=10) as response:
            return [entry["name"] for entry in json.load(response)["protocols"]]
    finally:
        child.stop()


def test_protocol_module_from_the_current_folder(tmp_path: Path) -> None:
    make_package(tmp_path)
    assert served_protocols(tmp_path) == ["echo", "shout"]


def test_app_dir_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    make_package(tmp_path / "plugins")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert served_protocols(elsewhere, "--app-dir", str(tmp_path / "plugins")) == ["echo", "shout"]


def test_without_the_package_the_error_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([WSPLEX, "--protocol-module", "mypkg.shout:Shout"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "cannot import mypkg.shout: No module named 'mypkg'" in result.stderr


def test_an_entry_point_must_be_named_as_its_class() -> None:
    assert load_named("shout", "support.sample_protocols:Shout") is Shout
    with pytest.raises(ProtocolLoadError, match=r"entry point 'loud' .* is protocol 'shout'"):
        load_named("loud", "support.sample_protocols:Shout")


def doc_block(first_line: str) -> str:
    """The Python block of docs/plugins.md that starts with ``first_line``."""
    text = GUIDE.read_text()
    start = text.index("```python\n" + first_line + "\n") + len("```python\n")
    return text[start:text.index("```", start)]


def test_the_guide_example_and_its_test_pass(tmp_path: Path) -> None:
    """docs/plugins.md's protocol and test, run as a plugin author runs them."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "board.py").write_text(doc_block("# mypkg/board.py"))
    (tmp_path / "test_board.py").write_text(doc_block("# test_board.py"))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-o", "asyncio_mode=auto", "test_board.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
