"""Data the tests read from `../shared` (the real CASIA-B dev set, OpenGait's zoo fixtures, CMU motion
capture): CI checks that folder out beside the repository, a plain clone has none.

Without it such a test skips with one line naming what is missing, so `make test` passes on a fresh
clone. `.ci/run` sets `GAITLU_REQUIRE_SHARED=1`: there a missing file fails the test instead, so CI never
skips one silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE = "GAITLU_REQUIRE_SHARED"


def required() -> bool:
    """Whether shared data must be present (CI), rather than skipped when absent (a fresh clone)."""
    return os.environ.get(REQUIRE, "") not in ("", "0")


def missing(what: str, where: str) -> NoReturn:
    """Skip (or, under GAITLU_REQUIRE_SHARED=1, fail) a test whose shared data is absent."""
    message = f"{what} not found: {where}"
    if required():
        pytest.fail(f"{message} ({REQUIRE}=1 makes it required)", pytrace=False)
    pytest.skip(f"{message} (a clone without ../shared; CI sets {REQUIRE}=1)")


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder, else skip or fail as `missing` says."""
    if not path.is_dir():
        missing(what, str(path))
    return path
