"""Gallery search: latency, recall@10 and memory per sequence, exact vs approximate, by gallery size.

Embeddings are identity-like clusters (gallery.testing): several sequences per subject with within-subject
noise; one more sequence per subject is the probe. Full GaitSSB embeddings (15,872 floats, 63 KB) do not
fit at 100k+ on this machine, so those points index 256-d vectors directly (the size the default
projection reduces to), flat vs IVF-SQ8 on the same vectors; the 1k point and the Rank-1 check use full
embeddings through the store's own projection + IVF-SQ8 build. Rank-1 is on synthetic labelled
embeddings (no trained model yet), aggregated per subject exactly as GalleryStore.search does.

    python benchmarks/gallery_search.py --quick   # 1k (full dims) + 100k (256-d), <= 60 s
    python benchmarks/gallery_search.py           # adds 1M (256-d); minutes
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from dataclasses import dataclass

import faiss
import numpy as np

from gallery.index import GalleryIndex, new_exact
from gallery.search import search_subjects
from gallery.settings import IndexSettings
from gallery.testing import clustered_embeddings

logger = logging.getLogger(__name__)

FULL_DIM, PARTS = 15_872, 31
REDUCED_DIM = 256
PER_SUBJECT = 10  # gallery sequences per subject (CASIA-B has 110); one more is the probe
NOISE = 0.6  # within-subject spread for the speed/recall points: same-subject cosine about 0.75
RANK1_NOISE, RANK1_PER_SUBJECT = 1.3, 4  # harder set: exact Rank-1 well below 100 %, so a drop can show
NPROBES = (16, 64, 128, 256)


@dataclass
class Point:
    size: int
    dim: int
    nprobe: int
    flat_ms: float
    approx_ms: float
    recall10: float
    flat_bytes: float  # per sequence
    approx_bytes: float


def gallery_and_probes(
    sequences: int,
    dim: int,
    parts: int,
    rng: np.random.Generator,
    noise: float = NOISE,
    per_subject: int = PER_SUBJECT,
):
    """`sequences` gallery embeddings (per_subject per subject), one probe per subject, labels of both."""
    subjects = max(1, sequences // per_subject)
    x, labels = clustered_embeddings(subjects, per_subject + 1, dim, parts, noise, rng)
    probe = np.arange(len(x)) % (per_subject + 1) == 0
    return x[~probe], labels[~probe], x[probe], labels[probe]


def per_query_ms(index, queries: np.ndarray, k: int) -> float:
    """Mean latency of one-query searches (how the service calls it), in ms."""
    start = time.perf_counter()
    for query in queries:
        index.search(query[None], k)
    return 1e3 * (time.perf_counter() - start) / len(queries)


def build(x: np.ndarray, settings: IndexSettings) -> GalleryIndex:
    ids = np.arange(len(x), dtype=np.int64)
    rng = np.random.default_rng(1)
    chunks = ((ids[i : i + 65_536], x[i : i + 65_536]) for i in range(0, len(x), 65_536))
    return GalleryIndex.build(
        x.shape[1], len(x), settings, lambda n: [x[rng.permutation(len(x))[:n]]], chunks
    )


def measure(size: int, dim: int, parts: int, settings: IndexSettings, queries: int, rng) -> list[Point]:
    """One row per nprobe: the same flat baseline and approximate index, visiting more or fewer lists."""
    x, _, probes, _ = gallery_and_probes(size, dim, parts, rng)
    probes = probes[:queries]
    flat = new_exact(dim)
    flat.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    start = time.perf_counter()
    approx = build(x, settings)
    logger.info("%d x %d: approximate index built in %.1f s", len(x), dim, time.perf_counter() - start)
    _, truth = flat.search(probes, 10)
    flat_ms, flat_bytes, approx_bytes = (
        per_query_ms(flat, probes, 10),
        faiss.serialize_index(flat).nbytes,
        approx.nbytes(),
    )
    points = []
    for nprobe in NPROBES:
        faiss.extract_index_ivf(approx.index).nprobe = nprobe
        _, found = approx.search(probes, 10)
        recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
        approx_ms = per_query_ms(approx.index, probes, 10)
        points.append(
            Point(
                len(x),
                dim,
                nprobe,
                flat_ms,
                approx_ms,
                float(recall),
                flat_bytes / len(x),
                approx_bytes / len(x),
            )
        )
    return points


def rank1(index: GalleryIndex, labels: np.ndarray, probes: np.ndarray, probe_labels: np.ndarray) -> float:
    """Share of probes whose best subject (GalleryStore's aggregation) is their own."""
    sequences = {i: (str(label), str(i)) for i, label in enumerate(labels.tolist())}
    sizes = Counter(subject for subject, _ in sequences.values())
    hits = search_subjects(index.search, probes, index.ntotal, PARTS, sequences, sizes, 1, 1, None)
    return float(
        np.mean([h[0].subject_id == str(label) for h, label in zip(hits, probe_labels, strict=True)])
    )


def rank1_change(sequences: int, settings: IndexSettings, rng) -> tuple[float, float, float]:
    """Rank-1 exact on full embeddings vs the compressed index (projection + IVF-SQ8), bytes/sequence."""
    x, labels, probes, probe_labels = gallery_and_probes(
        sequences, FULL_DIM, PARTS, rng, RANK1_NOISE, RANK1_PER_SUBJECT
    )
    exact = build(x, IndexSettings(exact_max=len(x)))
    compressed = build(x, settings)
    return (
        rank1(exact, labels, probes, probe_labels),
        rank1(compressed, labels, probes, probe_labels),
        (compressed.nbytes() / len(x)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1k and 100k only (<= 60 s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # One OpenMP thread per search: the service searches from a thread pool, and on a shared 2-core host
    # FAISS's spinning OpenMP threads made single-query flat search ~6x slower.
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    settings = IndexSettings(exact_max=500)  # the defaults, forced approximate at every size measured
    queries = 100 if args.quick else 500
    points = measure(1_000, FULL_DIM, PARTS, settings, queries, rng)
    for size in [100_000] if args.quick else [100_000, 1_000_000]:
        points += measure(size, REDUCED_DIM, 1, settings, queries, rng)
    before, after, code_bytes = rank1_change(2_000 if args.quick else 10_000, settings, rng)

    print(
        "| sequences | dim | nprobe | flat ms | approx ms | speedup | recall@10 | flat B/seq | approx B/seq |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in points:
        print(
            f"| {p.size} | {p.dim} | {p.nprobe} | {p.flat_ms:.3f} | {p.approx_ms:.3f} "
            f"| {p.flat_ms / p.approx_ms:.1f} | {p.recall10:.3f} "
            f"| {p.flat_bytes:.0f} | {p.approx_bytes:.0f} |"
        )
    print(f"Rank-1 full exact {100 * before:.1f} %, compressed {100 * after:.1f} % ({code_bytes:.0f} B/seq)")
    last = next(p for p in points[::-1] if p.nprobe == settings.nprobe)
    print(
        f"largest={last.size} nprobe={last.nprobe} speedup={last.flat_ms / last.approx_ms:.1f} "
        f"recall10={last.recall10:.3f} "
        f"approx_bytes_per_seq={last.approx_bytes:.0f} rank1_exact={100 * before:.1f} "
        f"rank1_compressed={100 * after:.1f} rank1_drop={100 * (before - after):.1f}"
    )


if __name__ == "__main__":
    main()
