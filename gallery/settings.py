"""Index settings: one typed object for how every gallery's FAISS index is built and searched.

The service takes them from its environment (GAITLU_INDEX__NPROBE=64, ... or GAITLU_INDEX as JSON), code
passes them to `GalleryStore`; either way an unknown key or an out-of-range value is an error, never
silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

Codec = Literal["flat", "fp16", "sq8", "pq", "pqfs"]
Refine = Literal["none", "flat", "fp16", "sq8"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class IndexSettings:
    """How galleries are indexed. Defaults suit GaitSSB embeddings (15,872 floats) on a CPU host.

    Up to `exact_max` sequences a gallery uses an exact inner-product index (63 KB per sequence at
    full size); above it an approximate one: an optional linear projection to `pca_dim`, IVF with
    `codec` codes to find candidates, and the projected vectors stored as `refine` codes to re-score
    `k_factor` candidates per result (pqfs + fp16 at 256-d: ~0.6 KB per sequence).
    """

    exact_max: int = Field(default=20_000, ge=1)  # sequences; above this the gallery switches to approximate
    # IVF lists; None: ~4 * sqrt(n), capped so each trains on >= 39
    nlist: int | None = Field(default=None, ge=1)
    nprobe: int = Field(default=512, ge=1)  # lists visited per query: recall vs speed (benchmarks/RESULTS.md)
    pca_dim: int | None = Field(default=256, ge=1)  # None, or >= the embedding size: IVF on the full vectors
    codec: Codec = "pqfs"  # pqfs: 4-bit PQ fast-scan, several times cheaper to scan than sq8
    pq_m: int | None = Field(default=None, ge=1)  # PQ sub-quantisers (must divide the indexed dim); None: 4-d
    refine: Refine = "fp16"  # codes that re-score the IVF candidates; "none": IVF scores as they are
    k_factor: int = Field(default=8, ge=1)  # with refine: IVF candidates per requested result
    # retrain the approximate index when the gallery grows by this
    retrain_factor: float = Field(default=2.0, gt=1)
    # at most this many sequences train the IVF quantiser and codec
    train_size: int = Field(default=65_536, ge=1000)
    pca_train_size: int = Field(default=4_096, ge=1)  # at most this many sequences fit the projection
    gpu: Literal["auto", "off"] = "auto"  # "auto": mirror indexes on a GPU when faiss-gpu sees one
    snapshots: bool = True  # write index snapshots next to the database to speed up the next start

    def __post_init__(self) -> None:
        if self.pca_dim is not None and self.pca_train_size < self.pca_dim:
            raise ValueError("pca_train_size must be >= pca_dim")

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
