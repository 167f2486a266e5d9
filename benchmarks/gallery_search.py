"""Gallery search: latency, recall@10 and memory per sequence, exact vs approximate, by gallery size.

Embeddings are identity-like clusters (tests/support/embeddings.py): several sequences per subject with
within-subject noise; one more sequence per subject is the probe. Full GaitSSB embeddings (15,872 floats,
63 KB) do not fit at 100k+ on this machine, so those points index 256-d vectors directly (the size the default
projection reduces to), flat vs approximate on the same vectors; the 1k point and the Rank-1 check use
full embeddings through the store's own projection + approximate build. Variants, side by side on the
same data and flat baseline: the default (IVF 4-bit PQ fast-scan candidates re-scored with fp16 codes)
and the previous default (IVF-SQ8, no re-scoring); the full run adds flat and sq8 re-scoring at 1M.
Rank-1 is on synthetic labelled embeddings (no trained model yet), aggregated per subject exactly as
GalleryStore.search does.

    python benchmarks/gallery_search.py --quick   # 1k (full dims) + 100k (256-d), <= 60 s
    python benchmarks/gallery_search.py           # adds 1M (256-d); minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from gaitlu.embedding import EmbeddingLayout
from gallery.index import GalleryIndex, new_exact
from gallery.search import search_subjects
from gallery.settings import IndexSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks run as scripts
from tests.support.embeddings import clustered_embeddings

logger = logging.getLogger(__name__)

FULL_DIM, PARTS = 15_872, 31
REDUCED_DIM = 256
PER_SUBJECT = 10  # gallery sequences per subject (CASIA-B has 110); one more is the probe
NOISE = 0.6  # within-subject spread for the speed/recall points: same-subject cosine about 0.75
RANK1_NOISE, RANK1_PER_SUBJECT = 1.3, 4  # harder set: exact Rank-1 well below 100 %, so a drop can show
NPROBES = (128, 256, 512, 1024)
DEFAULT = IndexSettings(exact_max=500)  # the defaults, forced approximate at every size measured
VARIANTS = {
    "pqfs+fp16": (DEFAULT, NPROBES),
    "sq8": (dataclasses.replace(DEFAULT, codec="sq8", refine="none"), NPROBES),
}
REFINE_VARIANTS = {  # full run, largest size, default nprobe only: the cost of other re-scoring codes
    f"pqfs+{codes}": (dataclasses.replace(DEFAULT, refine=codes), (DEFAULT.nprobe,))
    for codes in ("flat", "sq8")
}


@dataclass
class Point:
    size: int
    dim: int
    variant: str
    nprobe: int
    build_s: float
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
    layout = EmbeddingLayout.from_size(dim, parts)
    x, labels = clustered_embeddings(subjects, per_subject + 1, layout, noise, rng)
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


def measure(
    size: int,
    dim: int,
    parts: int,
    variants: dict[str, tuple[IndexSettings, tuple[int, ...]]],
    queries: int,
    rng: np.random.Generator,
) -> list[Point]:
    """One row per variant and nprobe, all against the same flat baseline on the same vectors."""
    x, _, probes, _ = gallery_and_probes(size, dim, parts, rng)
    probes = probes[:queries]
    flat = new_exact(dim)
    flat.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    _, truth = flat.search(probes, 10)
    flat_ms, flat_bytes = per_query_ms(flat, probes, 10), faiss.serialize_index(flat).nbytes
    points = []
    for name, (settings, nprobes) in variants.items():
        start = time.perf_counter()
        approx = build(x, settings)
        build_s = time.perf_counter() - start
        logger.info("%d x %d %s: built in %.1f s", len(x), dim, name, build_s)
        approx_bytes = approx.nbytes()
        for nprobe in nprobes:
            faiss.extract_index_ivf(approx.index).nprobe = nprobe
            _, found = approx.search(probes, 10)
            recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
            approx_ms = per_query_ms(approx, probes, 10)
            points.append(
                Point(
                    len(x),
                    dim,
                    name,
                    nprobe,
                    build_s,
                    flat_ms,
                    approx_ms,
                    float(recall),
                    flat_bytes / len(x),
                    approx_bytes / len(x),
                )
            )
        del approx
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
    """Rank-1 exact on full embeddings vs the compressed index (projection + approximate), bytes/sequence."""
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
    queries = 100 if args.quick else 500
    points = measure(1_000, FULL_DIM, PARTS, VARIANTS, queries, rng)
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    for size in sizes:
        variants = VARIANTS if size < sizes[-1] or args.quick else {**VARIANTS, **REFINE_VARIANTS}
        points += measure(size, REDUCED_DIM, 1, variants, queries, rng)
    before, after, code_bytes = rank1_change(2_000 if args.quick else 10_000, DEFAULT, rng)

    print(
        "| sequences | dim | index | nprobe | build s | flat ms | approx ms | speedup | recall@10 "
        "| flat B/seq | approx B/seq |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in points:
        print(
            f"| {p.size} | {p.dim} | {p.variant} | {p.nprobe} | {p.build_s:.1f} | {p.flat_ms:.3f} "
            f"| {p.approx_ms:.3f} | {p.flat_ms / p.approx_ms:.1f} | {p.recall10:.3f} "
            f"| {p.flat_bytes:.0f} | {p.approx_bytes:.0f} |"
        )
    print(f"Rank-1 full exact {100 * before:.1f} %, compressed {100 * after:.1f} % ({code_bytes:.0f} B/seq)")
    last = next(p for p in points[::-1] if p.variant == "pqfs+fp16" and p.nprobe == DEFAULT.nprobe)
    print(
        f"largest={last.size} index={last.variant} nprobe={last.nprobe} "
        f"speedup={last.flat_ms / last.approx_ms:.1f} recall10={last.recall10:.3f} "
        f"approx_bytes_per_seq={last.approx_bytes:.0f} rank1_exact={100 * before:.1f} "
        f"rank1_compressed={100 * after:.1f} rank1_drop={100 * (before - after):.1f}"
    )


if __name__ == "__main__":
    main()
