"""`make test` on a fresh machine: its first step (.ci/system-deps) finds the system tools the suite needs,
or names what is missing and how to get it before anything runs (PATH is narrowed to simulate that)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.servers import REPO

SCRIPT = REPO / ".ci" / "system-deps"


def narrow_path(folder: Path, *tools: str) -> str:
    """A PATH holding only `tools` (links to the real ones): a machine without the rest."""
    folder.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    return str(folder)


def run(path: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash
    return subprocess.run([bash, str(SCRIPT)], env={"PATH": path}, capture_output=True, text=True, timeout=60)


def test_missing_tools_are_named_with_the_command_that_installs_them(tmp_path: Path) -> None:
    result = run(narrow_path(tmp_path / "bin", "id", "cat"))  # no chromium, no compose, no apt-get
    assert result.returncode == 1
    assert "missing, so nothing was run: docker-compose chromium" in result.stderr
    assert "apt-get install -y docker-compose chromium" in result.stderr


def test_present_tools_pass(tmp_path: Path) -> None:
    path = narrow_path(tmp_path / "bin", "id", "cat")
    for fake in ("chromium", "docker-compose"):  # stand-ins: only their presence on PATH is checked
        (Path(path) / fake).write_text("#!/bin/sh\n")
        (Path(path) / fake).chmod(0o755)
    result = run(path)
    assert (result.returncode, result.stderr) == (0, "")
