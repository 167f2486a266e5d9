"""Index settings: one typed object for how every gallery's FAISS index is built and searched."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from gaitlu.errors import ConfigError

Codec = Literal["flat", "fp16", "sq8", "pq", "pqfs"]
Refine = Literal["none", "flat", "fp16", "sq8"]


@dataclass(frozen=True)
class IndexSettings:
    """How galleries are indexed. Defaults suit GaitSSB embeddings (15,872 floats) on a CPU host.

    Up to `exact_max` sequences a gallery uses an exact inner-product index (63 KB per sequence at
    full size); above it an approximate one: an optional linear projection to `pca_dim`, IVF with
    `codec` codes to find candidates, and the projected vectors stored as `refine` codes to re-score
    `k_factor` candidates per result (pqfs + fp16 at 256-d: ~0.6 KB per sequence).
    """

    exact_max: int = 20_000  # sequences; above this the gallery switches to the approximate index
    nlist: int | None = None  # IVF lists; None: about 4 * sqrt(n), capped so each list trains on >= 39 points
    nprobe: int = 512  # lists visited per query: recall vs speed (benchmarks/RESULTS.md)
    pca_dim: int | None = 256  # None, or >= the embedding size: IVF on the full vectors
    codec: Codec = "pqfs"  # pqfs: 4-bit PQ fast-scan, several times cheaper to scan than sq8
    pq_m: int | None = None  # PQ sub-quantisers (must divide the indexed dim); None: 4-d sub-vectors
    refine: Refine = "fp16"  # codes that re-score the IVF candidates; "none": IVF scores as they are
    k_factor: int = 8  # with refine: IVF candidates per requested result
    retrain_factor: float = 2.0  # retrain the approximate index when the gallery grows by this factor
    train_size: int = 65_536  # at most this many sequences train the IVF quantiser and codec
    pca_train_size: int = 4_096  # at most this many sequences fit the projection
    gpu: Literal["auto", "off"] = "auto"  # "auto": mirror indexes on a GPU when faiss-gpu sees one
    snapshots: bool = True  # write index snapshots next to the database to speed up the next start

    def __post_init__(self) -> None:
        checks = {
            "exact_max must be >= 1": self.exact_max >= 1,
            "nlist must be >= 1": self.nlist is None or self.nlist >= 1,
            "nprobe must be >= 1": self.nprobe >= 1,
            "pca_dim must be >= 1": self.pca_dim is None or self.pca_dim >= 1,
            f"codec must be one of {Codec.__args__}": self.codec in Codec.__args__,
            "pq_m must be >= 1": self.pq_m is None or self.pq_m >= 1,
            f"refine must be one of {Refine.__args__}": self.refine in Refine.__args__,
            "k_factor must be >= 1": self.k_factor >= 1,
            "retrain_factor must be > 1": self.retrain_factor > 1,
            "train_size must be >= 1000": self.train_size >= 1000,
            "pca_train_size must be >= pca_dim": self.pca_dim is None or self.pca_train_size >= self.pca_dim,
            "gpu must be 'auto' or 'off'": self.gpu in ("auto", "off"),
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ConfigError("invalid index settings: " + "; ".join(failed))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IndexSettings:
        """Strict overrides over the defaults: an unknown key is an error, not silently dropped."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown index setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**values)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that shape an index's content: a snapshot built under others is not reused."""
        return {
            key: getattr(self, key)
            for key in (
                "exact_max",
                "nlist",
                "pca_dim",
                "codec",
                "pq_m",
                "refine",
                "train_size",
                "pca_train_size",
            )
        }
