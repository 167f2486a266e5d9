"""Identity-like synthetic embeddings for tests and benchmarks.

Real gait embeddings cluster by subject; iid random vectors have no neighbours worth finding and make
every approximate index look broken, so tests and benchmarks of the galleries use these instead.
"""

from __future__ import annotations

import numpy as np

from gaitlu.embedding import EmbeddingLayout, normalise_parts


def unit_embeddings(rng: np.random.Generator, n: int, layout: EmbeddingLayout) -> np.ndarray:
    """(n, P*C) random embeddings, each part unit-norm (no identity structure)."""
    x = rng.standard_normal((n, layout.parts, layout.part_dim), dtype=np.float32)  # (n, P, C)
    return layout.flatten(normalise_parts(x)).astype(np.float32)


def clustered_embeddings(
    subjects: int,
    per_subject: int,
    layout: EmbeddingLayout,
    noise: float,
    rng: np.random.Generator,
    rank: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of `subjects` identities -> embeddings (subjects * per_subject, P*C) and labels (n,).

    Identities live in a `rank`-dimensional latent space mapped linearly to the embedding (real
    embeddings are far from full rank); each sequence adds within-subject noise of relative size
    `noise` in the latent space plus a little isotropic noise, then every part is L2-normalised.
    """
    size = layout.size
    mixing = rng.standard_normal((rank, size), dtype=np.float32) / np.sqrt(rank)  # (r, D)
    identity = rng.standard_normal((subjects, rank), dtype=np.float32)  # (S, r)
    latent = np.repeat(identity, per_subject, axis=0)  # (S * K, r)
    latent += noise * rng.standard_normal(latent.shape, dtype=np.float32)
    x = latent @ mixing + 0.1 * noise * rng.standard_normal((len(latent), size), dtype=np.float32)  # (n, D)
    unit = layout.flatten(normalise_parts(layout.unflatten(x))).astype(np.float32)
    return unit, np.repeat(np.arange(subjects), per_subject)
