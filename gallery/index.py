"""One gallery's FAISS index: exact or approximate, keyed by the sequences' SQLite row ids.

The index is a cache of SQLite: it can always be rebuilt from there. Exact: IndexIDMap2(IndexFlatIP) over
the flattened per-part-normalised embeddings, so inner product / parts = mean per-part cosine. Approximate:
an uncentred linear projection (top eigenvectors of the second-moment matrix; a centred PCA would add a
per-item bias to inner products), IVF with compact codes (default 4-bit PQ fast-scan) to find candidates,
and the projected vectors as fp16 (or flat/sq8) codes in an IndexIDMap2 to re-score them (FAISS's
IndexRefine cannot remove ids). Both kinds remove ids. On a GPU host the CPU index stays canonical (GPU
indexes cannot remove ids) and a GPU copy of the searched index is refreshed after changes.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import faiss
import numpy as np

from gaitlu.embedding import centre_parts
from gaitlu.files import atomic_write
from gallery.errors import TamperedDataError
from gallery.settings import IndexSettings

logger = logging.getLogger(__name__)

Kind = Literal["exact", "approximate"]
SNAPSHOT_MAGIC = b"GALLERYIDX2\n"  # 2: parts (index, refine codes, projection)
EXHAUSTIVE_SHARE = 4  # with refine: scan all stored codes once candidates would be >= 1/4 of the gallery
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


def linear_transform(matrix: np.ndarray) -> faiss.LinearTransform:
    """(d, D) matrix -> x @ matrix.T in FAISS: one query's product in numpy's BLAS ran ~15x slower here."""
    transform = faiss.LinearTransform(matrix.shape[1], matrix.shape[0], False)
    faiss.copy_array_to_vector(np.ascontiguousarray(matrix, dtype=np.float32).ravel(), transform.A)
    transform.is_trained = True
    return transform


Owner = TypeVar("Owner", faiss.IndexIVF, faiss.IndexIDMap2)  # the indexes that can own their parts


def _owning(parent: Owner, *children: Any) -> Owner:
    """Hand the children's memory to the C++ parent, so it outlives the Python wrappers."""
    parent.own_fields = True
    for child in children:
        child.this.disown()
    return parent


Data = TypeVar("Data", bytes, memoryview)


def _as_is(name: str, data: Data) -> Data:
    """A snapshot part written and read as it is (an unencrypted store)."""
    return data


def _sq_type(codec: str) -> int:
    return faiss.ScalarQuantizer.QT_fp16 if codec == "fp16" else faiss.ScalarQuantizer.QT_8bit


def pq_subquantizers(dim: int, settings: IndexSettings) -> int:
    """As configured, else sub-vectors of the smallest length >= 4 that divides `dim` (64 for 256-d)."""
    if settings.pq_m is not None:
        if dim % settings.pq_m:
            raise ValueError(f"pq_m {settings.pq_m} does not divide the indexed dimension {dim}")
        return settings.pq_m
    return dim // next((length for length in range(4, dim + 1) if dim % length == 0), dim)


def _ivf(dim: int, nlist: int, settings: IndexSettings, trainable: int) -> faiss.IndexIVF:
    """An untrained IVF. PQ codebooks need ~39 points per centroid: a smaller sample gets sq8 instead."""
    ip = faiss.METRIC_INNER_PRODUCT
    codec = settings.codec
    if codec in ("pq", "pqfs"):
        m = pq_subquantizers(dim, settings)
        centroids = 16 if codec == "pqfs" else 256
        if trainable < MIN_POINTS_PER_LIST * centroids:
            logger.info("%d training vectors are too few for %s codes: using sq8", trainable, codec)
            codec = "sq8"
    quantizer = faiss.IndexFlatIP(dim)
    index: faiss.IndexIVF
    if codec == "flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    elif codec == "pq":
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, ip)
    elif codec == "pqfs":
        index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, m, 4, ip)
    else:
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, _sq_type(codec), ip)
    return _owning(index, quantizer)


def _refine_store(dim: int, settings: IndexSettings, train: np.ndarray) -> faiss.Index | None:
    """Id-keyed vectors that re-score IVF candidates: an IDMap2, since IndexRefine cannot remove ids."""
    if settings.refine == "none":
        return None
    codes: faiss.Index
    if settings.refine == "flat":
        codes = faiss.IndexFlatIP(dim)
    else:
        codes = faiss.IndexScalarQuantizer(dim, _sq_type(settings.refine), faiss.METRIC_INNER_PRODUCT)
        codes.train(train)
    return _owning(faiss.IndexIDMap2(codes), codes)


def new_exact(dim: int) -> faiss.Index:
    flat = faiss.IndexFlatIP(dim)
    return _owning(faiss.IndexIDMap2(flat), flat)


Sampler = Callable[[int], Iterable[np.ndarray]]  # n -> chunks of up to n random gallery vectors (rows, D)


def centred(vectors: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """(n, D) flattened embeddings -> centred (`gaitlu.embedding.centre_parts`) with a (P, C) centre."""
    if centre is None:
        return vectors
    parts, part_dim = centre.shape
    by_part = np.asarray(vectors, np.float32).reshape(-1, parts, part_dim)  # (n, P, C)
    return np.ascontiguousarray(centre_parts(by_part, centre).reshape(len(by_part), -1), dtype=np.float32)


def train_approximate(
    sample: Sampler, dim: int, count: int, settings: IndexSettings, centre: np.ndarray | None = None
) -> GalleryIndex:
    """An empty, trained approximate index for a gallery of about `count` sequences.

    Training data is projected chunk by chunk: 65k full GaitSSB embeddings would be 4 GB, projected 64 MB.
    """
    matrix = None
    if settings.pca_dim is not None and settings.pca_dim < dim:
        first = [centred(chunk, centre) for chunk in sample(settings.pca_train_size)]
        matrix = projection(np.concatenate(first), settings.pca_dim)  # (d, D)
        transform = linear_transform(matrix)
        chunks = sample(settings.train_size)
        train = np.concatenate([transform.apply(centred(chunk, centre)) for chunk in chunks])  # (n, d)
    else:
        train = np.concatenate([centred(chunk, centre) for chunk in sample(settings.train_size)])  # (n, D)
    ivf = _ivf(train.shape[1], list_count(count, settings), settings, len(train))
    ivf.train(train)
    refine = _refine_store(train.shape[1], settings, train)
    return GalleryIndex(ivf, Built("approximate", count, "built"), settings, matrix, refine, centre)


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


P = TypeVar("P", faiss.SearchParameters, faiss.SearchParametersIVF)


def _parameters(params: P, selector: faiss.IDSelector, nprobe: int | None = None) -> P:
    """Search parameters restricted to `selector` (and, for an IVF, probing `nprobe` lists)."""
    params.sel = selector
    if isinstance(params, faiss.SearchParametersIVF) and nprobe is not None:
        params.nprobe = nprobe
    return params


class GalleryIndex:
    """A FAISS index plus what the store needs to know about it. Not thread-safe: the store locks.

    Approximate: `index` is the IVF over projected vectors (`projection` (d, D), or None: no projection)
    and `refine` the same vectors as codes keyed by id, which re-score the IVF's candidates. With a
    (P, C) `centre` (the model's calibrated centring), vectors and queries are centred on the way in.
    """

    def __init__(
        self,
        index: faiss.Index,
        built: Built,
        settings: IndexSettings,
        projection: np.ndarray | None = None,
        refine: faiss.Index | None = None,
        centre: np.ndarray | None = None,
    ) -> None:
        self.index = index
        self.built = built
        self.settings = settings
        self.projection = projection
        self.refine = refine
        self.centre = centre
        self._transform = None if projection is None else linear_transform(projection)
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
        centre: np.ndarray | None = None,
    ) -> GalleryIndex:
        """Build from scratch: `sample` gives training vectors, `chunks` yields (ids (n,), vectors (n, D))."""
        kind = wanted_kind(count, settings, current)
        if kind == "approximate":
            gallery_index = train_approximate(sample, dim, count, settings, centre)
        else:
            gallery_index = cls(new_exact(dim), Built("exact", 0, "built"), settings, centre=centre)
        for ids, vectors in chunks:
            gallery_index.add(ids, vectors)
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

    def _reduce(self, vectors: np.ndarray) -> np.ndarray:
        """(n, D) -> (n, d): the indexed space (centred, then projected)."""
        vectors = centred(np.ascontiguousarray(vectors, dtype=np.float32), self.centre)
        return vectors if self._transform is None else self._transform.apply(vectors)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        reduced = self._reduce(vectors)
        self.index.add_with_ids(reduced, ids)
        if self.refine is not None:
            self.refine.add_with_ids(reduced, ids)
        self._gpu_index = None

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        # faiss's Python wrapper takes an id array here; its SWIG stubs only say IDSelector.
        self.index.remove_ids(ids)  # type: ignore[arg-type]
        if self.refine is not None:
            self.refine.remove_ids(ids)  # type: ignore[arg-type]
        self._gpu_index = None

    def search(
        self, queries: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(q, D) -> inner products (q, k) and ids (q, k); id -1 pads rows with fewer results.

        With refine, the IVF proposes k * k_factor candidates and the stored codes re-score them; when
        that is a large share of the gallery, scanning the stored codes outright is exact and no slower.
        `ids` (a filter's matching index ids) restricts the search to them, inside FAISS (`_search_among`).
        """
        if ids is not None:
            return self._search_among(queries, k, np.ascontiguousarray(ids, dtype=np.int64))
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        reduced = self._reduce(queries)  # (q, d)
        if self.refine is None:
            return self._searcher().search(reduced, k)
        wanted = min(self.ntotal, k * self.settings.k_factor)
        if wanted * EXHAUSTIVE_SHARE >= self.ntotal:
            return self.refine.search(reduced, k)
        _, candidates = self._searcher().search(reduced, wanted)  # (q, wanted), -1 padded
        return self._rescore(reduced, candidates, k)

    def _search_among(self, queries: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The search restricted to `ids` by an id selector: the index only ever scores matching vectors, so
        k results come back whenever k match. Approximate: when the probed IVF lists cannot hold enough
        matching candidates (a selective filter), or did not for some query, the matching vectors' stored
        codes are scanned instead (exact over them). The CPU index serves it (GPU indexes take no
        selectors)."""
        k = max(1, min(k, len(ids)))
        reduced = self._reduce(queries)  # (q, d)
        selector = faiss.IDSelectorBatch(ids)  # referenced here for as long as the parameters are used
        scan = _parameters(faiss.SearchParameters(), selector)
        if self.built.kind == "exact":
            return self.index.search(reduced, k, params=scan)
        ivf = faiss.extract_index_ivf(self.index)
        probed = _parameters(faiss.SearchParametersIVF(), selector, ivf.nprobe)
        if self.refine is None:
            scores, found = self.index.search(reduced, k, params=probed)
            every: faiss.SearchParameters = _parameters(faiss.SearchParametersIVF(), selector, ivf.nlist)
            exhaustive = self.index
        else:
            wanted = min(len(ids), k * self.settings.k_factor)
            in_reach = len(ids) * min(1.0, ivf.nprobe / ivf.nlist)  # matching vectors in the probed lists
            if wanted * EXHAUSTIVE_SHARE >= len(ids) or in_reach < wanted * EXHAUSTIVE_SHARE:
                return self.refine.search(reduced, k, params=scan)
            _, candidates = self.index.search(reduced, wanted, params=probed)  # (q, wanted)
            scores, found = self._rescore(reduced, candidates, k)
            every, exhaustive = scan, self.refine
        short = (found < 0).any(axis=1) & ((found >= 0).sum(axis=1) < len(ids))
        if short.any():  # matching vectors the probed lists did not hold: scan every matching one
            scores[short], found[short] = exhaustive.search(reduced[short], k, params=every)
        return scores, found

    def _rescore(self, reduced: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidates (q, c) -> the best k of them by inner product with their stored codes, best first."""
        assert self.refine is not None, "re-scoring needs the refine codes"
        found = candidates >= 0
        vectors = self.refine.reconstruct_batch(candidates[found])  # (f, d), row-major over (q, c)
        query_rows = np.repeat(reduced, found.sum(axis=1), axis=0)  # (f, d)
        scores = np.full(candidates.shape, -np.inf, dtype=np.float32)  # (q, c)
        scores[found] = np.einsum("fd,fd->f", vectors, query_rows)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (q, k)
        scores, ids = np.take_along_axis(scores, order, axis=1), np.take_along_axis(candidates, order, axis=1)
        ids[~np.isfinite(scores)] = -1
        return scores, ids

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

    def _parts(self) -> dict[str, bytes]:
        """What a snapshot holds, by name: the FAISS indexes serialised, the projection as raw float32."""
        parts = {"index": faiss.serialize_index(self.index).tobytes()}
        if self.refine is not None:
            parts["refine"] = faiss.serialize_index(self.refine).tobytes()
        if self.projection is not None:
            parts["projection"] = self.projection.astype("<f4").tobytes()
        return parts

    def nbytes(self) -> int:
        """Serialised size: what the index holds in memory, give or take allocator slack. Copies the index."""
        return sum(len(part) for part in self._parts().values())

    def memory_estimate(self) -> int:
        """Codes + ids (+ the id maps' hash tables), without copying: cheap enough for metrics."""
        id_map = 8 + 40  # an IndexIDMap2 keeps each id in a vector and a hash-table node (not serialised)
        if self.built.kind == "exact":
            return self.ntotal * (self.index.d * 4 + id_map)
        ivf = faiss.extract_index_ivf(self.index)
        total = self.ntotal * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4
        if self.refine is not None:
            total += self.ntotal * (self.refine.sa_code_size() + id_map)
        return total + (self.projection.nbytes if self.projection is not None else 0)

    def save(self, path: Path, tag: dict[str, Any], seal: Callable[[str, bytes], bytes] = _as_is) -> None:
        """Atomic snapshot: header (kind, training size, the SQLite state it reflects, part sizes) + parts,
        each as `seal` (name, bytes) makes it (the store's encryption at rest; as they are by default)."""
        parts = {name: seal(name, data) for name, data in self._parts().items()}
        header = json.dumps(
            {
                "tag": tag,
                "kind": self.built.kind,
                "trained_for": self.built.trained_for,
                "parts": {name: len(data) for name, data in parts.items()},
                "projection_shape": None if self.projection is None else list(self.projection.shape),
            }
        ).encode()
        with atomic_write(path) as f:
            f.write(SNAPSHOT_MAGIC + struct.pack("<I", len(header)) + header)
            for data in parts.values():
                f.write(data)

    @classmethod
    def load(
        cls,
        path: Path,
        tag: dict[str, Any],
        settings: IndexSettings,
        centre: np.ndarray | None = None,
        unseal: Callable[[str, memoryview], bytes | memoryview] = _as_is,
    ) -> GalleryIndex | None:
        """The snapshot if it exists, reads cleanly (`unseal` opens what `save`'s seal made) and its tag
        equals `tag`; otherwise None."""
        try:
            data = path.read_bytes()
            if not data.startswith(SNAPSHOT_MAGIC):
                raise ValueError("not a gallery index snapshot of this version")
            start = len(SNAPSHOT_MAGIC) + 4
            (size,) = struct.unpack("<I", data[len(SNAPSHOT_MAGIC) : start])
            header = json.loads(data[start : start + size])
            if header["tag"] != tag:
                logger.info("index snapshot %s is stale: rebuilding from the database", path.name)
                return None
            parts, offset = {}, start + size
            for name, length in header["parts"].items():
                parts[name] = np.frombuffer(
                    unseal(name, memoryview(data)[offset : offset + length]), np.uint8
                )
                offset += length
            if offset != len(data):
                raise ValueError("snapshot size disagrees with its header")
            index = faiss.deserialize_index(parts["index"])
            refine = faiss.deserialize_index(parts["refine"]) if "refine" in parts else None
            matrix = (
                parts["projection"].view("<f4").reshape(header["projection_shape"]).astype(np.float32)
                if "projection" in parts
                else None
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, RuntimeError, struct.error, TamperedDataError) as exc:
            logger.warning("ignoring unreadable index snapshot %s: %s", path, exc)
            return None
        built = Built(header["kind"], header["trained_for"], "snapshot")
        return cls(index, built, settings, matrix, refine, centre)
