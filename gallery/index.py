"""One gallery's FAISS index: exact or approximate, keyed by the sequences' SQLite row ids.

The index is a cache of SQLite: it can always be rebuilt from there. Exact: IndexIDMap2(IndexFlatIP) over
the flattened per-part-normalised embeddings, so inner product / parts = mean per-part cosine. Approximate:
an uncentred linear projection (top eigenvectors of the second-moment matrix; a centred PCA would add a
per-item bias to inner products) and IVF with flat, fp16, sq8 or PQ codes. Both remove ids. On a GPU host
the CPU index stays canonical (GPU indexes cannot remove ids) and a GPU copy is refreshed after changes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from gallery.settings import IndexSettings

logger = logging.getLogger(__name__)

Kind = Literal["exact", "approximate"]
SNAPSHOT_MAGIC = b"GALLERYIDX1\n"
MIN_POINTS_PER_LIST = 39  # FAISS k-means warns below this many training points per centroid


def wanted_kind(count: int, settings: IndexSettings, current: Kind | None = None) -> Kind:
    """Exact up to exact_max; back to exact only below half of it, so a gallery at the edge does not flap."""
    if count > settings.exact_max:
        return "approximate"
    if current == "approximate" and count > settings.exact_max // 2:
        return "approximate"
    return "exact"


def list_count(count: int, settings: IndexSettings) -> int:
    """IVF lists: as configured or about 4 * sqrt(n), capped so k-means gets enough points per list."""
    trainable = min(count, settings.train_size) // MIN_POINTS_PER_LIST
    return max(1, min(settings.nlist or int(4 * math.sqrt(count)), trainable))


def projection(sample: np.ndarray, out_dim: int) -> np.ndarray:
    """(s, D) sample -> (out_dim, D) orthonormal rows spanning the sample's top second-moment directions.

    Works through the (s, s) Gram matrix, which is cheap when s << D (15,872 for GaitSSB).
    """
    x = np.asarray(sample, dtype=np.float32)
    gram = (x @ x.T).astype(np.float64)  # (s, s); float32 products keep the (s, D) copy small
    values, vectors = np.linalg.eigh(gram)  # ascending
    top = np.argsort(values)[::-1][:out_dim]
    basis = x.T @ vectors[:, top].astype(
        np.float32
    )  # (D, out_dim), orthogonal columns, norm sqrt(eigenvalue)
    basis /= np.maximum(np.linalg.norm(basis, axis=0, keepdims=True), 1e-12)
    return np.ascontiguousarray(basis.T, dtype=np.float32)


def _owning(parent: faiss.Index, *children: Any) -> faiss.Index:
    """Hand the children's memory to the C++ parent, so it outlives the Python wrappers."""
    parent.own_fields = True
    for child in children:
        child.this.disown()
    return parent


def _ivf(dim: int, nlist: int, settings: IndexSettings) -> faiss.IndexIVF:
    ip = faiss.METRIC_INNER_PRODUCT
    quantizer = faiss.IndexFlatIP(dim)
    if settings.codec == "flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    elif settings.codec == "pq":
        if dim % settings.pq_m:
            raise ValueError(f"pq_m {settings.pq_m} does not divide the indexed dimension {dim}")
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, settings.pq_m, 8, ip)
    else:
        qtype = faiss.ScalarQuantizer.QT_fp16 if settings.codec == "fp16" else faiss.ScalarQuantizer.QT_8bit
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, qtype, ip)
    return _owning(index, quantizer)


def new_exact(dim: int) -> faiss.Index:
    flat = faiss.IndexFlatIP(dim)
    return _owning(faiss.IndexIDMap2(flat), flat)


Sampler = Callable[[int], Iterable[np.ndarray]]  # n -> chunks of up to n random gallery vectors (rows, D)


def train_approximate(sample: Sampler, dim: int, count: int, settings: IndexSettings) -> faiss.Index:
    """An empty, trained approximate index for a gallery of about `count` sequences.

    Training data is projected chunk by chunk: 65k full GaitSSB embeddings would be 4 GB, projected 64 MB.
    """
    nlist = list_count(count, settings)
    if settings.pca_dim is not None and settings.pca_dim < dim:
        matrix = projection(np.concatenate(list(sample(settings.pca_train_size))), settings.pca_dim)  # (d, D)
        transform = faiss.LinearTransform(dim, settings.pca_dim, False)
        faiss.copy_array_to_vector(matrix.ravel(), transform.A)
        transform.is_trained = True
        ivf = _ivf(settings.pca_dim, nlist, settings)
        ivf.train(np.concatenate([chunk @ matrix.T for chunk in sample(settings.train_size)]))  # (n, d)
        index = _owning(faiss.IndexPreTransform(transform, ivf), transform, ivf)
    else:
        index = ivf = _ivf(dim, nlist, settings)
        ivf.train(np.concatenate(list(sample(settings.train_size))))
    ivf.nprobe = settings.nprobe
    return index


def _try_gpu(settings: IndexSettings) -> Any:
    if settings.gpu == "off" or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None
    return faiss.StandardGpuResources()


@dataclass(frozen=True)
class Built:
    """How an index came to be: kind, the gallery size it was trained for, where it came from."""

    kind: Kind
    trained_for: int  # sequences at (re)training time; 0 for exact
    source: Literal["built", "snapshot"]


class GalleryIndex:
    """A FAISS index plus what the store needs to know about it. Not thread-safe: the store locks."""

    def __init__(self, index: faiss.Index, built: Built, settings: IndexSettings) -> None:
        self.index = index
        self.built = built
        self.settings = settings
        if built.kind == "approximate":
            faiss.extract_index_ivf(index).nprobe = settings.nprobe
        self._gpu_resources = _try_gpu(settings)
        self._gpu_index: faiss.Index | None = None
        self._gpu_lock = threading.Lock()

    @classmethod
    def build(
        cls,
        dim: int,
        count: int,
        settings: IndexSettings,
        sample: Sampler,
        chunks: Iterable[tuple[np.ndarray, np.ndarray]],
        current: Kind | None = None,
    ) -> GalleryIndex:
        """Build from scratch: `sample` gives training vectors, `chunks` yields (ids (n,), vectors (n, D))."""
        kind = wanted_kind(count, settings, current)
        if kind == "approximate":
            index = train_approximate(sample, dim, count, settings)
            built = Built("approximate", count, "built")
        else:
            index, built = new_exact(dim), Built("exact", 0, "built")
        gallery_index = cls(index, built, settings)
        for ids, vectors in chunks:
            gallery_index.index.add_with_ids(vectors, ids)
        logger.info("built %s index of %d sequences", kind, gallery_index.ntotal)
        return gallery_index

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def needs_rebuild(self, count: int) -> bool:
        """True when the gallery outgrew its training or crossed the exact/approximate boundary."""
        if wanted_kind(count, self.settings, self.built.kind) != self.built.kind:
            return True
        return (
            self.built.kind == "approximate" and count > self.settings.retrain_factor * self.built.trained_for
        )

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids.astype(np.int64))
        self._gpu_index = None

    def remove(self, ids: np.ndarray) -> None:
        self.index.remove_ids(ids.astype(np.int64))
        self._gpu_index = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(q, D) -> inner products (q, k) and ids (q, k); id -1 pads rows with fewer results."""
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        return self._searcher().search(queries, k)

    def _searcher(self) -> faiss.Index:
        if self._gpu_resources is None:
            return self.index
        with self._gpu_lock:
            if self._gpu_index is None:
                try:
                    self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
                except RuntimeError as exc:  # an index type without a GPU twin: serve from the CPU
                    logger.warning("GPU copy of the index failed, searching on CPU: %s", exc)
                    self._gpu_resources = None
                    return self.index
            return self._gpu_index

    def nbytes(self) -> int:
        """Serialised size: what the index holds in memory, give or take allocator slack. Copies the index."""
        return int(faiss.serialize_index(self.index).nbytes)

    def memory_estimate(self) -> int:
        """Codes + ids (+ the id map's hash table for exact), without copying: cheap enough for metrics."""
        if self.built.kind == "exact":
            return self.ntotal * (self.index.d * 4 + 8 + 16)
        ivf = faiss.extract_index_ivf(self.index)
        return self.ntotal * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4

    def save(self, path: Path, tag: dict[str, Any]) -> None:
        """Atomic snapshot: header (kind, training size, the SQLite state it reflects) + the index."""
        header = json.dumps(
            {"tag": tag, "kind": self.built.kind, "trained_for": self.built.trained_for}
        ).encode()
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(SNAPSHOT_MAGIC + struct.pack("<I", len(header)) + header)
            f.write(faiss.serialize_index(self.index).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, tag: dict[str, Any], settings: IndexSettings) -> GalleryIndex | None:
        """The snapshot if it exists, reads cleanly and its tag equals `tag`; otherwise None."""
        try:
            data = path.read_bytes()
            if not data.startswith(SNAPSHOT_MAGIC):
                raise ValueError("not a gallery index snapshot")
            start = len(SNAPSHOT_MAGIC) + 4
            (size,) = struct.unpack("<I", data[len(SNAPSHOT_MAGIC) : start])
            header = json.loads(data[start : start + size])
            if header["tag"] != tag:
                logger.info("index snapshot %s is stale: rebuilding from the database", path.name)
                return None
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8, offset=start + size))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, RuntimeError, struct.error) as exc:
            logger.warning("ignoring unreadable index snapshot %s: %s", path, exc)
            return None
        return cls(index, Built(header["kind"], header["trained_for"], "snapshot"), settings)
