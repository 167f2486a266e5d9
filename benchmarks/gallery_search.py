"""Gallery search: latency, recall@10 and memory per sequence, exact vs approximate, by gallery size.

Embeddings are identity-like clusters (tests/support/embeddings.py): several sequences per subject with
within-subject noise; one more sequence per subject is the probe. Full GaitSSB embeddings (15,872 floats,
63 KB) do not fit at 100k+ on this machine, so those points index 256-d vectors directly (the size the default
projection reduces to), flat vs approximate on the same vectors; the 1k point and the Rank-1 check use
full embeddings through the store's own projection + approximate build. Variants, side by side on the
same data and flat baseline: the default (IVF 4-bit PQ fast-scan candidates re-scored with fp16 codes)
and the previous default (IVF-SQ8, no re-scoring); the full run adds flat and sq8 re-scoring at 1M.
Rank-1 is on synthetic labelled embeddings (no trained model yet), aggregated per subject exactly as
LocalStore.search does.

    python benchmarks/gallery_search.py --quick   # 1k (full dims) + 100k (256-d), <= 60 s
    python benchmarks/gallery_search.py           # adds 1M (256-d); minutes

`--backends` compares the gallery BACKENDS end to end instead, through the store API the service calls:
local exact, local approximate (the default codecs) and Milvus (a milvus-lite server process on
loopback, FLAT index, Strong consistency) on the same 8 x 32 = 256-float clustered embeddings: enrolment
throughput (one client, one subject of 10 sequences per call, every call durable), search latency
p50/p99 at 1 and 8 client threads (k=10, top_m=1), recall@10 of subjects against local exact, and memory
per sequence (local: its index; Milvus: the server process's resident growth).

    python benchmarks/gallery_search.py --backends --quick   # 5k sequences, <= 60 s
    python benchmarks/gallery_search.py --backends           # 10k and 100k: over 22 minutes here
    python benchmarks/gallery_search.py --backends --sizes 10000   # what fits (10k: about 2 minutes)

`--encryption` measures what encryption at rest costs the local store (gallery/crypto.py): the same
full-size embeddings (15,872 floats, each with a ~1 KB GEI picture in its metadata) enrolled, searched
and reopened without and with a master key, side by side, in alternating rounds (so that load drifting
on a shared machine falls on both). Enrolment: one subject of 10 sequences per call, every call durable
(synchronous FULL); search: single-probe searches (k = 10) from one thread on the exact index; start:
reopening the store from its (encrypted) snapshot. The store alone, without the model, so the cost is
not hidden behind inference: through the service the relative cost is smaller still.

    python benchmarks/gallery_search.py --encryption --quick   # 1k sequences, 2 rounds, <= 60 s
    python benchmarks/gallery_search.py --encryption           # 5k sequences, 3 rounds
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
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
    """Share of probes whose best subject (LocalStore's aggregation) is their own."""
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


@dataclass
class BackendPoint:
    size: int
    backend: str
    enrol_per_s: float
    p50_1: float  # ms, one client
    p99_1: float
    p50_8: float  # ms, eight clients at once
    p99_8: float
    searches_per_s_8: float
    recall10: float  # subjects, against local exact
    bytes_per_seq: float


def latencies(store, queries: np.ndarray, model: str, clients: int) -> tuple[float, float, float]:
    """p50 and p99 latency (ms) of single-query searches from `clients` threads, and searches per s."""
    from concurrent.futures import ThreadPoolExecutor

    def one(query: np.ndarray) -> float:
        start = time.perf_counter()
        store.search("g", query, model, k=10)
        return 1e3 * (time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = list(pool.map(one, queries))
    wall = time.perf_counter() - start
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), len(queries) / wall


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_backends(size: int, queries: int, folder: Path) -> list[BackendPoint]:
    """The three backends on one gallery of `size` sequences (10 per subject) and the same probes."""
    import hashlib

    from gallery.store import LocalStore
    from gallery.stores import MilvusSettings, open_gallery_store
    from tests.support.milvus import milvus_lite_server

    model = hashlib.sha256(b"benchmark").hexdigest()
    layout = EmbeddingLayout(parts=8, part_dim=32)
    x, labels, probes, _ = gallery_and_probes(size, layout.size, layout.parts, np.random.default_rng(size))
    probes = probes[:queries]
    subjects = int(labels.max()) + 1
    points, truth = [], None

    def run(name: str, store, bytes_per_seq) -> None:
        nonlocal truth
        store.create_gallery("g", model, layout)
        gc.collect()  # a full collection pending from setup must not land inside the timed loop
        start = time.perf_counter()
        for s in range(subjects):
            store.enroll("g", f"s{s}", x[labels == s], model)
        if hasattr(store, "wait_for_index_builds"):
            store.wait_for_index_builds()
        enrol = len(x) / (time.perf_counter() - start)
        logger.info("%d sequences, %s: enrolled at %.0f/s", len(x), name, enrol)
        found = [[h.subject_id for h in hits] for hits in store.search_batch("g", probes, model, k=10)]
        truth = truth or found
        recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
        one = latencies(store, probes, model, 1)
        eight = latencies(store, np.concatenate([probes] * 2), model, 8)
        points.append(
            BackendPoint(
                len(x),
                name,
                enrol,
                one[0],
                one[1],
                eight[0],
                eight[1],
                eight[2],
                float(recall),
                bytes_per_seq(store),
            )
        )

    def local_bytes(store) -> float:
        return store.stats()[0].index_bytes / len(x)

    with LocalStore(folder / f"exact-{size}.db", index_settings=IndexSettings(exact_max=size + 1)) as store:
        run("local exact", store, local_bytes)
    with LocalStore(folder / f"approx-{size}.db", index_settings=IndexSettings(exact_max=500)) as store:
        run("local approximate", store, local_bytes)
    # A small memtable: milvus-lite scans unflushed rows in Python, so they are flushed into indexed
    # segments early (a server setting, not the store's).
    env = {"MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES": str(1 << 20)}
    with milvus_lite_server(folder / f"milvus-{size}", **env) as server:
        base = rss_bytes(server.pid)
        settings = MilvusSettings(uri=server.uri, timeout_s=120)
        with open_gallery_store("milvus", milvus=settings) as store:
            run("milvus-lite FLAT", store, lambda _: (rss_bytes(server.pid) - base) / len(x))
    return points


def backends_main(quick: bool, sizes: list[int] | None) -> None:
    import tempfile

    sizes = sizes or ([5_000] if quick else [10_000, 100_000])
    queries = 50 if quick else 200
    points: list[BackendPoint] = []
    with tempfile.TemporaryDirectory(prefix="gaitlu-backends-") as folder:
        for size in sizes:
            points += measure_backends(size, queries, Path(folder))
    print(
        "| sequences | backend | enrol seq/s | p50 ms (1) | p99 ms (1) | p50 ms (8) | p99 ms (8) "
        "| searches/s (8) | recall@10 | bytes/seq |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in points:
        print(
            f"| {p.size} | {p.backend} | {p.enrol_per_s:.0f} | {p.p50_1:.2f} | {p.p99_1:.2f} | {p.p50_8:.2f} "
            f"| {p.p99_8:.2f} | {p.searches_per_s_8:.0f} | {p.recall10:.3f} | {p.bytes_per_seq:.0f} |"
        )
    largest = [p for p in points if p.size == points[-1].size]
    by = {p.backend: p for p in largest}
    exact, approx, milvus = by["local exact"], by["local approximate"], by["milvus-lite FLAT"]
    print(
        f"largest={exact.size} local_exact_p50_ms={exact.p50_1:.2f} local_approx_p50_ms={approx.p50_1:.2f} "
        f"milvus_p50_ms={milvus.p50_1:.2f} milvus_p99_8_ms={milvus.p99_8:.2f} "
        f"approx_recall10={approx.recall10:.3f} milvus_recall10={milvus.recall10:.3f} "
        f"local_enrol_per_s={exact.enrol_per_s:.0f} milvus_enrol_per_s={milvus.enrol_per_s:.0f}"
    )


@dataclass
class EncryptionRound:
    mode: str  # "plaintext" or "encrypted"
    enrol_per_s: float
    searches_per_s: float
    start_s: float


def encryption_round(mode: str, key: bytes | None, data: tuple, folder: Path) -> EncryptionRound:
    """One store built, searched and reopened with or without a master key."""
    from gaitlu.pictures import png_data_uri
    from gallery.store import LocalStore

    x, labels, probes, layout, model = data
    picture = png_data_uri(
        (np.outer(np.hanning(64), np.hanning(44)) * 255).astype(np.uint8)
    )  # a GEI-like blob
    path = folder / f"{mode}.db"
    with LocalStore(path, encryption_key=key) as store:
        store.create_gallery("g", model, layout)
        start = time.perf_counter()
        for s in range(int(labels.max()) + 1):
            mine = x[labels == s]
            store.enroll(
                "g", f"s{s}", mine, model, metadata=[{"gei_png": picture, "camera": "c1"}] * len(mine)
            )
        enrol = len(x) / (time.perf_counter() - start)
        start = time.perf_counter()
        for probe in probes:
            store.search("g", probe, model, k=10)
        searches = len(probes) / (time.perf_counter() - start)
    start = time.perf_counter()
    with LocalStore(path, encryption_key=key) as store:
        assert store.stats()[0].index_source == "snapshot"
        opened = time.perf_counter() - start
    for file in folder.glob(f"{mode}.db*"):  # the next round starts from an empty folder
        if file.is_dir():
            for part in file.iterdir():
                part.unlink()
            file.rmdir()
        else:
            file.unlink()
    return EncryptionRound(mode, enrol, searches, opened)


def encryption_main(quick: bool) -> None:
    import hashlib
    import secrets
    import tempfile

    size, rounds, queries = (1_000, 2, 100) if quick else (5_000, 3, 300)
    layout = EmbeddingLayout(parts=PARTS, part_dim=FULL_DIM // PARTS)
    x, labels, probes, _ = gallery_and_probes(size, layout.size, layout.parts, np.random.default_rng(7))
    probes = np.resize(probes, (queries, layout.size))  # (queries, D): cycled when there are fewer
    data = (x, labels, probes, layout, hashlib.sha256(b"benchmark").hexdigest())
    key = secrets.token_bytes(32)
    results: list[EncryptionRound] = []
    with tempfile.TemporaryDirectory(prefix="gaitlu-encryption-") as folder:
        for r in range(rounds):
            order = [("plaintext", None), ("encrypted", key)]
            for mode, k in order if r % 2 == 0 else order[::-1]:
                results.append(encryption_round(mode, k, data, Path(folder)))
                logger.info("round %d %s: %s", r, mode, results[-1])

    def median(mode: str, field: str) -> float:
        return float(np.median([getattr(p, field) for p in results if p.mode == mode]))

    print(f"{len(x)} sequences of {layout.size} floats, {queries} probes, median of {rounds} rounds each")
    print("| store | enrol seq/s | searches/s (1 thread) | start from snapshot s |")
    print("|---|---:|---:|---:|")
    for mode in ("plaintext", "encrypted"):
        enrol, search, start = (median(mode, f) for f in ("enrol_per_s", "searches_per_s", "start_s"))
        print(f"| {mode} | {enrol:.0f} | {search:.0f} | {start:.2f} |")
    slower = {  # percent slower with encryption: throughput ratio - 1
        f: 100 * (median("plaintext", f) / median("encrypted", f) - 1)
        for f in ("enrol_per_s", "searches_per_s")
    }
    print(
        f"sequences={len(x)} rounds={rounds} enrol_plain_per_s={median('plaintext', 'enrol_per_s'):.0f} "
        f"enrol_encrypted_per_s={median('encrypted', 'enrol_per_s'):.0f} "
        f"enrol_slower_pct={slower['enrol_per_s']:.1f} "
        f"search_plain_per_s={median('plaintext', 'searches_per_s'):.0f} "
        f"search_encrypted_per_s={median('encrypted', 'searches_per_s'):.0f} "
        f"search_slower_pct={slower['searches_per_s']:.1f} "
        f"start_plain_s={median('plaintext', 'start_s'):.2f} "
        f"start_encrypted_s={median('encrypted', 'start_s'):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1k and 100k only (<= 60 s)")
    parser.add_argument("--backends", action="store_true", help="compare the gallery backends end to end")
    parser.add_argument(
        "--encryption", action="store_true", help="the local store without and with encryption at rest"
    )
    parser.add_argument(
        "--sizes", type=lambda v: [int(n) for n in v.split(",")], help="--backends: gallery sizes, e.g. 10000"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.backends:
        faiss.omp_set_num_threads(1)
        backends_main(args.quick, args.sizes)
        return
    if args.encryption:
        faiss.omp_set_num_threads(1)
        encryption_main(args.quick)
        return
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
