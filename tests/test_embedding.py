"""gaitlu.embedding: one layout type (parts x channels, size, normalisation) and one way to compare."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout, mean_part_cosine, normalise_parts, part_cosines
from gaitlu.manifest import MANIFEST_NAME, Centring, read_manifest


def test_layout_names_parts_channels_and_size() -> None:
    layout = EmbeddingLayout(parts=31, part_dim=64)
    assert (layout.size, layout.normalisation) == (31 * 64, "per-part-l2")
    assert EmbeddingLayout.from_size(31 * 64, 31) == layout
    flat = np.arange(2 * layout.size, dtype=np.float32).reshape(2, -1)
    parts = layout.unflatten(flat)
    assert parts.shape == (2, 31, 64) and parts[1, 2, 3] == flat[1, 2 * 64 + 3]  # part-major
    np.testing.assert_array_equal(layout.flatten(parts), flat)
    assert EmbeddingLayout(16, 256, "none").normalisation == "none"  # raw features (OpenGait's zoo)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EmbeddingLayout(0, 8), "positive integer parts"),
        (lambda: EmbeddingLayout(4, 2.5), "positive integer part_dim"),
        (lambda: EmbeddingLayout(4, 8, "l1"), "normalisation must be one of"),
        (lambda: EmbeddingLayout.from_size(100, 3), "does not split into 3 parts"),
    ],
)
def test_layout_refuses_what_is_not_one(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_normalise_and_score_part_by_part() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 3, 8))  # (N, P, C) each
    a[0, 1] = 0.0  # an all-zero part stays zero
    unit = normalise_parts(a)
    norms = np.linalg.norm(unit, axis=-1)
    assert norms[0, 1] == 0.0 and np.allclose(np.delete(norms.ravel(), 1), 1.0)
    expected = np.mean(
        [
            [x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(p, q, strict=True)]
            for p, q in zip(a[1:], b[1:], strict=True)
        ],
        axis=1,
    )
    np.testing.assert_allclose(mean_part_cosine(a[1:], b[1:]), expected, atol=1e-12)
    np.testing.assert_allclose(part_cosines(7 * a, b), part_cosines(a, b), atol=1e-12)  # scale-free
    flat_ip = (normalise_parts(a[1:]) * normalise_parts(b[1:])).sum(axis=(1, 2)) / 3  # what an index sees
    np.testing.assert_allclose(flat_ip, expected, atol=1e-12)


def test_an_artifact_exported_before_the_rename_still_reads(tiny_artifact: Path, tmp_path: Path) -> None:
    """Artifacts exported before the vocabulary called channels-per-part `dim`: they load unchanged."""
    old = tmp_path / "old"
    shutil.copytree(tiny_artifact, old)
    data = json.loads((old / MANIFEST_NAME).read_text())
    data["output"] = {("dim" if key == "channels" else key): value for key, value in data["output"].items()}
    (old / MANIFEST_NAME).write_text(json.dumps(data))
    assert read_manifest(old).output.embedding_layout == read_manifest(tiny_artifact).output.embedding_layout


@pytest.mark.parametrize("model", ["default", "synthetic"])
def test_the_committed_models_read_their_channels_key_as_part_dim(model: str) -> None:
    """The shipped manifests say `channels` for floats per part: they load unchanged."""
    folder = Path(__file__).resolve().parents[1] / "models" / model
    assert "channels" in json.loads((folder / MANIFEST_NAME).read_text())["output"]
    layout = read_manifest(folder).output.embedding_layout
    assert (layout.parts, layout.part_dim, layout.size) == (31, 64, 31 * 64)


def test_a_centring_written_with_channels_still_reads() -> None:
    mean = base64.b64encode(np.zeros((2, 3), "<f4").tobytes()).decode()
    old = {"mean_b64": mean, "parts": 2, "channels": 3, "reference": "x", "sequences": 1}
    new = {("part_dim" if key == "channels" else key): value for key, value in old.items()}
    assert Centring.model_validate(old) == Centring.model_validate(new)
    assert Centring.model_validate(old).part_dim == 3
