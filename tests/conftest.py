"""Shared test fixtures."""

import fcntl
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GaitSSB (channels 8-64, random weights) exported with `export_artifact`, built once per
    test run and shared by the service tests (and xdist workers: the first one builds it under a lock)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: one folder per run
    out = shared / "tiny-artifact"
    with open(shared / "tiny-artifact.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.json").is_file():  # written last: present means complete
            import torch  # only when a test needs the artifact

            from export.pipeline import ExportOptions, export_artifact
            from tests.support.artifacts import SMALL_PARITY, TINY, write_checkpoint
            from train.model import GaitSSB

            # Default BatchNorm statistics: distinct walkers get distinct embeddings (mean cosine ~0.96-0.99).
            torch.manual_seed(0)
            ckpt = write_checkpoint(shared / "tiny-artifact.pt", GaitSSB(TINY).eval())
            export_artifact(ckpt, out, ExportOptions(max_batch=16, max_frames=256, parity_cases=SMALL_PARITY))
    return out


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory):
    """One milvus-lite server per test process (per xdist worker); tests keep apart by database."""
    from tests.support.milvus import milvus_lite_server

    with milvus_lite_server(tmp_path_factory.mktemp("milvus") / "data") as server:
        yield server.uri


@pytest.fixture(scope="session")
def calibrated_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny artifact calibrated by `gaitlu calibrate` on 12 synthetic walkers (centred), in a copy."""
    import shutil

    from synth.layout import generate_opengait
    from tests.support.cli import run_cli

    base = tmp_path_factory.mktemp("calibrated")
    art = base / "artifact"
    shutil.copytree(tiny_artifact, art)
    generate_opengait(base / "walkers", 12, seed=21, sequences_per_subject=6)
    result = run_cli(None, "calibrate", "--artifact", art, "--dataset", base / "walkers", "--centring", "on")
    assert result.code == 0
    return art
