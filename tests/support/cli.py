"""`gaitlu ARGS` through the real entry point: in the test's own process, or as a child process."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from gaitlu.cli import main


class CliResult(NamedTuple):
    code: int  # the exit status: 0 all done, 1 some items failed, 2 a usage or user error
    out: str
    err: str

    def json(self) -> Any:
        """stdout as the one JSON document a `--json` command prints."""
        assert self.out, f"no JSON on stdout: {self.err}"
        return json.loads(self.out)


def run_cli(capsys: pytest.CaptureFixture[str] | None, *args: str | Path) -> CliResult:
    """Exit code, stdout and stderr of `gaitlu ARGS`. Without `capsys` the output is left where it is
    (the caller may read it with its own fixture) and `out`/`err` are empty."""
    try:
        main([str(arg) for arg in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    if capsys is None:
        return CliResult(code, "", "")
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def gaitlu_argv(*args: str | Path | int) -> list[str]:
    """The command line of `gaitlu ARGS` in a child process of this interpreter (installed or not)."""
    return [sys.executable, "-c", "from gaitlu.cli import main; main()", *map(str, args)]
