"""OpenGait model-zoo fixtures (../shared/data/opengait-zoo-ref): checkpoints written by OpenGait's own
code with random weights, their model_cfg YAMLs, fixed inputs and OpenGait's embeddings of them.

The folder is `$GAITLU_ZOO_REF`, else `shared/data/opengait-zoo-ref` beside the repository (CI checks
`shared` out there) or beside the folder of git worktrees. Without it the tests that need it skip, or
fail under GAITLU_REQUIRE_SHARED=1 (CI): tests/support/shared.py.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import numpy as np

from tests.support import shared

REPO = Path(__file__).resolve().parents[2]
RELATIVE = Path("shared") / "data" / "opengait-zoo-ref"
COSINE_MIN = 0.99999  # per sequence: the same network as OpenGait's, to float32 rounding
RELATIVE_ERROR_MAX = 1e-5  # max |ours - OpenGait| / max |OpenGait| (the fixture README's float32 check)


def zoo_ref() -> Path:
    candidates = [Path(os.environ["GAITLU_ZOO_REF"])] if "GAITLU_ZOO_REF" in os.environ else []
    candidates += [REPO.parent / RELATIVE, REPO.parents[1] / RELATIVE]
    for folder in candidates:
        if (folder / "meta.json").is_file():
            return folder
    shared.missing("OpenGait zoo fixtures (set GAITLU_ZOO_REF)", ", ".join(str(c) for c in candidates))


@cache
def meta() -> dict:
    return json.loads((zoo_ref() / "meta.json").read_text())


STEMS = (
    "gaitbase_casiab_narrow",
    "deepgaitv2_p3d_gait3d_narrow",
    "deepgaitv2_2d_gait3d_narrow",
    "gaitset_casiab_narrow",
    "gaitgl_casiab_narrow",
)


def paths(stem: str) -> tuple[Path, Path]:
    """(OpenGait checkpoint, its model_cfg YAML)."""
    return zoo_ref() / f"{stem}.pt", zoo_ref() / f"{stem}_model_cfg.yaml"


def cases(stem: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(case, float32 silhouettes (N, T, 64, 44), OpenGait's embedding as (N, P, C)) per input key."""
    inputs, refs = np.load(zoo_ref() / "inputs.npz"), np.load(zoo_ref() / f"{stem}_ref.npz")
    return [(key, inputs[key], refs[key].transpose(0, 2, 1)) for key in ("n3_t20", "n1_t7")]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def parity(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(min cosine, max |ours - ref| / max |ref|) of (N, P, C) embeddings; the cosine is the worst of each
    sequence's flattened vector and of each of its parts. Asserts both bounds and finiteness (NaN would
    pass a min/max comparison silently)."""
    assert ours.shape == ref.shape and np.isfinite(ours).all()
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    per_sequence = _cosine(a.reshape(len(a), -1), b.reshape(len(b), -1))
    cosine = float(min(per_sequence.min(), _cosine(a, b).min()))
    relative = float(np.abs(a - b).max() / np.abs(b).max())
    assert cosine >= COSINE_MIN, f"min cosine {cosine:.8f} < {COSINE_MIN}"
    assert relative <= RELATIVE_ERROR_MAX, f"max abs error {relative:.2e} of max |ref| > {RELATIVE_ERROR_MAX}"
    return cosine, relative
