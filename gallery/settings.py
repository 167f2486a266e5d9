"""Gallery settings: how the local store's FAISS indexes are built and searched (`IndexSettings`), and
where the Milvus store's server is and how its collections are indexed (`MilvusSettings`).

Both sit here, below either store, so that `gallery.stores` (which opens one) and `gallery.milvus`
(which one opens) import them without importing each other. The service takes them from its environment
(GAITLU_INDEX__NPROBE=64, ... or GAITLU_INDEX as JSON; GAITLU_MILVUS_*), code passes them to the
store; either way an unknown key or an out-of-range value is an error, never silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

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


# Milvus index types a gallery collection may be built with. milvus-lite builds FLAT, IVF_FLAT, IVF_SQ8
# and HNSW; the others need a Milvus server (GPU_* a GPU query node).
MilvusIndexType = Literal[
    "FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN", "AUTOINDEX", "GPU_CAGRA", "GPU_IVF_PQ"
]
Param = int | float | str


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MilvusIndexSettings:
    """The vector index of each new gallery collection (fixed at creation) and how it is searched.

    FLAT is exact: the default, and right up to a few million sequences per query node. Larger galleries
    take IVF_SQ8 / IVF_PQ or DISKANN (docs/gallery.md sizes them); `params` and `search_params` pass
    through to Milvus (e.g. {"nlist": 4096} and {"nprobe": 64}), which validates them.
    """

    type: MilvusIndexType = "FLAT"
    params: dict[str, Param] = Field(default_factory=dict)
    search_params: dict[str, Param] = Field(default_factory=dict)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MilvusSettings:
    """Where the galleries live: a Milvus cluster URL, a milvus-lite server address, or a local
    milvus-lite file (one process only), with an optional token, in one Milvus database."""

    uri: str
    token: str | None = None
    db_name: Annotated[str, Field(pattern=r"[A-Za-z_][A-Za-z0-9_]{0,254}")] = "default"
    index: MilvusIndexSettings = Field(default_factory=MilvusIndexSettings)
    # per call; a server that does not answer is a 503, not a hang
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
