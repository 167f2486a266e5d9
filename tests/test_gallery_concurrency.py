"""Many threads at once, and a process killed mid-enrolment: nothing lost, nothing doubled, no torn rows."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout
from gallery import IndexSettings, LocalStore
from tests.support.embeddings import unit_embeddings

MODEL = hashlib.sha256(b"model").hexdigest()
LAYOUT = EmbeddingLayout(parts=4, part_dim=16)
MIN_STEPS = 8


@pytest.mark.slow
def test_threads_enrolling_deleting_and_searching_stay_consistent(tmp_path):
    # Crosses from exact to IVF mid-run; nprobe = nlist keeps IVF exhaustive, so answers stay exact.
    settings = IndexSettings(exact_max=150, nlist=4, nprobe=4, codec="flat", pca_dim=None)
    store = LocalStore(tmp_path / "g.db", index_settings=settings, synchronous="NORMAL")
    store.create_gallery("g", MODEL, LAYOUT)
    deadline = time.monotonic() + 3.0
    enrolled: dict[str, tuple[str, np.ndarray]] = {}  # sequence id -> (subject, embedding), once returned
    deleted: set[str] = set()
    failures: list[str] = []
    guard = threading.Lock()

    def writer(worker: int) -> None:
        rng = np.random.default_rng(worker)
        step = 0
        while step < MIN_STEPS or time.monotonic() < deadline:  # enough sequences to cross into IVF
            subject = f"w{worker}-s{step % 5}"
            x = unit_embeddings(rng, 2, LAYOUT)
            infos = store.enroll("g", subject, x, MODEL)
            with guard:
                enrolled.update(
                    {info.sequence_id: (subject, vec) for info, vec in zip(infos, x, strict=True)}
                )
            if step % 4 == 3:
                store.delete_sequence("g", infos[0].sequence_id)
                with guard:
                    deleted.add(infos[0].sequence_id)
            # A sequence whose enrolment returned is found at once, under its subject, scoring ~1.
            (hit,) = store.search("g", x[1], MODEL, k=1)
            if (hit.sequence_id, hit.subject_id) != (infos[1].sequence_id, subject) or hit.score < 0.999:
                failures.append(f"own sequence not found first: {hit}")
            step += 1

    def reader(worker: int) -> None:
        rng = np.random.default_rng(1000 + worker)
        while time.monotonic() < deadline:
            queries = unit_embeddings(rng, 3, LAYOUT)
            for hits in store.search_batch("g", queries, MODEL, k=5):
                subjects = [h.subject_id for h in hits]
                if len(set(subjects)) != len(subjects) or any(not -1 <= h.score <= 1 for h in hits):
                    failures.append(f"inconsistent result {hits}")
            store.list_subjects("g", 0, 20)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    alive = set(enrolled) - deleted
    info = store.get_gallery("g")
    assert info.sequence_count == len(alive) and len(alive) >= 224
    assert store.wait_for_index_builds(60)  # retraining runs in the background
    (stats,) = store.stats()
    assert (stats.sequences, stats.index_kind) == (len(alive), "approximate")
    stored = Counter(
        seq.sequence_id
        for page in [store.list_subjects("g", 0, 10_000)]
        for s in page.data
        for seq in store.list_sequences("g", s.subject_id)
    )
    assert set(stored) == alive and max(stored.values()) == 1  # nothing lost, nothing doubled
    store.close()


CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from gallery import LocalStore
    from gaitlu.embedding import EmbeddingLayout
    from tests.support.embeddings import unit_embeddings
    store = LocalStore(sys.argv[1])
    rng = np.random.default_rng(0)
    i = 0
    while True:
        x = unit_embeddings(rng, 3, EmbeddingLayout(parts=4, part_dim=16))
        infos = store.enroll("g", f"s{i % 7}", x, sys.argv[2])
        print(" ".join(info.sequence_id for info in infos), flush=True)
        i += 1
    """
)


@pytest.mark.slow
def test_enrolments_that_returned_survive_kill_9(tmp_path):
    path = tmp_path / "g.db"
    with LocalStore(path) as store:
        store.create_gallery("g", MODEL, LAYOUT)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), MODEL], stdout=subprocess.PIPE, text=True, env=env
    )
    printed: list[str] = []
    deadline = time.monotonic() + 30
    while len(printed) < 60 and time.monotonic() < deadline:  # let it get well into its loop
        line = child.stdout.readline()
        if not line:
            break
        printed.extend(line.split())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    printed.extend(child.stdout.read().split())  # lines already flushed before the kill
    assert len(printed) >= 60, "the child did not enrol"
    with LocalStore(path) as store:
        info = store.get_gallery("g")
        assert info.sequence_count >= len(printed) and info.sequence_count % 3 == 0  # whole enrolments only
        for sequence_id in printed[::7]:
            seq = store.get_sequence("g", sequence_id)
            assert seq.subject_id.startswith("s")
        # every stored row is searchable: its own embedding finds it at score ~1
        ids = {
            sid
            for page in [store.list_subjects("g", 0, 100)]
            for s in page.data
            for sid in (q.sequence_id for q in store.list_sequences("g", s.subject_id))
        }
        assert set(printed) <= ids and store.stats()[0].sequences == len(ids)
