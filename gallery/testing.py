"""Identity-like synthetic embeddings for tests and benchmarks.

Real gait embeddings cluster by subject; iid random vectors have no neighbours worth finding and make
every approximate index look broken (stack.md), so tests and benchmarks use these instead.
"""

from __future__ import annotations

import numpy as np


def normalise_parts(x: np.ndarray, parts: int) -> np.ndarray:
    """(n, D) -> (n, D) with each of the `parts` blocks unit-norm."""
    by_part = x.reshape(len(x), parts, -1)  # (n, P, C)
    return (by_part / np.linalg.norm(by_part, axis=2, keepdims=True)).reshape(x.shape).astype(np.float32)


def clustered_embeddings(
    subjects: int,
    per_subject: int,
    dim: int,
    parts: int,
    noise: float,
    rng: np.random.Generator,
    rank: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of `subjects` identities -> embeddings (subjects * per_subject, dim) and labels (n,).

    Identities live in a `rank`-dimensional latent space mapped linearly to the embedding (real
    embeddings are far from full rank); each sequence adds within-subject noise of relative size
    `noise` in the latent space plus a little isotropic noise, then every part is L2-normalised.
    """
    mixing = rng.standard_normal((rank, dim), dtype=np.float32) / np.sqrt(rank)  # (r, D)
    identity = rng.standard_normal((subjects, rank), dtype=np.float32)  # (S, r)
    latent = np.repeat(identity, per_subject, axis=0)  # (S * K, r)
    latent += noise * rng.standard_normal(latent.shape, dtype=np.float32)
    x = latent @ mixing + 0.1 * noise * rng.standard_normal((len(latent), dim), dtype=np.float32)  # (n, D)
    return normalise_parts(x, parts), np.repeat(np.arange(subjects), per_subject)
