"""Find the real CASIA-B development set (subjects 001-074) for the real-data test and benchmarks/real.py.

The packed set lives beside the repository (CI has `../shared`); it is never copied into the repo. An
unpacked OpenGait tree (`<subject>/<cond>/<view>/<view>.pkl`) is taken from `$GAITLU_CASIAB_DEV` when
that is set (used read-only), else unpacked into a cache folder by the dataset's own `unpack.py` from
`$GAITLU_CASIAB_DEV_SOURCE` (default `<repo>/../shared/data/casiab-dev`): the tests' cache is a folder
of the test run (shared by the xdist workers), the benchmarks' `<repo>/.data/casiab-dev` (ignored by
git), kept between runs. Only the subjects asked for are unpacked, each once. A test that finds neither
skips, or fails under GAITLU_REQUIRE_SHARED=1 (CI): `require_data`, tests/support/shared.py.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import shared

REPO = Path(__file__).resolve().parents[2]
SOURCE = Path(os.environ.get("GAITLU_CASIAB_DEV_SOURCE", REPO.parent / "shared" / "data" / "casiab-dev"))
BENCHMARK_CACHE = REPO / ".data" / "casiab-dev"
TRAIN = tuple(f"{i:03d}" for i in range(1, 51))  # the dev split: fine-tune on these ...
TEST = tuple(f"{i:03d}" for i in range(51, 75))  # ... and test on these
ALL = TRAIN + TEST


def require_data() -> None:
    """Skip the calling test (fail it under GAITLU_REQUIRE_SHARED=1) when the dev set is nowhere given."""
    given = os.environ.get("GAITLU_CASIAB_DEV")
    if given:
        shared.require_dir(Path(given), "the unpacked CASIA-B dev set ($GAITLU_CASIAB_DEV)")
    elif not (SOURCE / "unpack.py").is_file():
        shared.missing("the CASIA-B dev set (set GAITLU_CASIAB_DEV_SOURCE or GAITLU_CASIAB_DEV)", str(SOURCE))


def dev_tree(subjects: tuple[str, ...], cache: Path = BENCHMARK_CACHE) -> Path:
    """An OpenGait tree holding at least `subjects`, unpacked into `cache` where they are missing."""
    given = os.environ.get("GAITLU_CASIAB_DEV")
    if given:
        root = Path(given)
        missing = [s for s in subjects if not (root / s).is_dir()]
        if missing:
            raise FileNotFoundError(f"$GAITLU_CASIAB_DEV={root} lacks subjects {missing[:5]}")
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test workers: one unpacks, the others wait
        missing = [s for s in sorted(subjects) if not (cache / f".unpacked-{s}").exists()]
        if missing and not (SOURCE / "unpack.py").is_file():
            raise FileNotFoundError(
                f"the CASIA-B dev set is not at {SOURCE}: set GAITLU_CASIAB_DEV_SOURCE to the packed set "
                "or GAITLU_CASIAB_DEV to an unpacked tree"
            )
        for first, last in runs(missing):
            # The dataset's unpacker: atomic per file, keeps finished files; markers follow its success.
            command = [sys.executable, str(SOURCE / "unpack.py"), str(cache), "--subjects", f"{first}-{last}"]
            subprocess.run(command, check=True, capture_output=True)
            for subject in range(int(first), int(last) + 1):
                (cache / f".unpacked-{subject:03d}").touch()
    return cache


def runs(subjects: list[str]) -> list[tuple[str, str]]:
    """Sorted subject ids -> inclusive ranges of consecutive ids (what unpack.py --subjects takes)."""
    out: list[tuple[str, str]] = []
    for subject in subjects:
        if out and int(subject) == int(out[-1][1]) + 1:
            out[-1] = (out[-1][0], subject)
        else:
            out.append((subject, subject))
    return out


def run_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' unpacked copy: one folder per test run, shared by the xdist workers."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return shared / "casiab-dev"
