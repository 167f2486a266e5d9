"""Retraining an index runs aside: writes to every gallery go on meanwhile, and nothing is lost or doubled.

The rebuild is held at a gate (a wrapper around the real `GalleryIndex.build`), so the test controls
exactly what happens while it runs; every store call is made with a timeout, so a rebuild that holds the
store lock fails the test instead of hanging it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout
from gallery import IndexSettings, LocalStore
from gallery import index as index_module
from tests.support.embeddings import unit_embeddings

MODEL = hashlib.sha256(b"model").hexdigest()
LAYOUT = EmbeddingLayout(parts=4, part_dim=16)
EXACT_MAX = 200
SETTINGS = IndexSettings(exact_max=EXACT_MAX, nlist=4, nprobe=4, codec="flat", pca_dim=None, train_size=1000)
PROMPT_S = 5.0  # a store call that waits on the rebuild would take as long as the gate is shut


def vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    return unit_embeddings(rng, n, LAYOUT)


class Gate:
    """Holds every index build, once armed, until opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed, self.entered, self.opened = False, threading.Event(), threading.Event()
        real = index_module.GalleryIndex.build

        def gated(*args: Any, **kwargs: Any) -> Any:
            if self.armed:
                self.entered.set()
                assert self.opened.wait(60), "the gate was never opened"
            return real(*args, **kwargs)

        monkeypatch.setattr(index_module.GalleryIndex, "build", staticmethod(gated))


@pytest.fixture
def store(tmp_path) -> Iterator[LocalStore]:
    with LocalStore(tmp_path / "g.db", index_settings=SETTINGS, synchronous="NORMAL") as s:
        yield s


@pytest.fixture
def calls() -> Iterator[Callable[..., Any]]:
    """Run a store call in a worker thread; its result, or a failure if it takes over PROMPT_S."""
    with ThreadPoolExecutor(4) as pool:
        yield lambda fn, *args: pool.submit(fn, *args).result(timeout=PROMPT_S)


def test_writes_to_any_gallery_go_on_while_an_index_is_retrained(monkeypatch, store, calls) -> None:
    rng = np.random.default_rng(0)
    gate = Gate(monkeypatch)
    store.create_gallery("big", MODEL, LAYOUT)
    store.create_gallery("other", MODEL, LAYOUT)
    gate.armed = True
    before = {
        info.sequence_id
        for s in range(EXACT_MAX // 5)
        for info in store.enroll("big", f"s{s}", vectors(rng, 5), MODEL)
    }
    assert store.stats()[0].index_kind == "exact"

    crossing = calls(store.enroll, "big", "cross", vectors(rng, 1), MODEL)  # 201 > 200: retrain starts
    assert gate.entered.wait(PROMPT_S), "the retrain did not start"

    # Meanwhile: the other gallery, and the same one, take enrolments and deletions at once.
    other = calls(store.enroll, "other", "o1", vectors(rng, 3), MODEL)
    during_x = vectors(rng, 4)
    during = calls(store.enroll, "big", "late", during_x, MODEL)
    removed_old = sorted(before)[0]
    calls(store.delete_sequence, "big", removed_old)  # in the rebuild's snapshot
    calls(store.delete_sequence, "big", during[0].sequence_id)  # not in it: added after
    hit = calls(store.search, "big", during_x[1], MODEL, 1)[0]  # the old index serves searches, up to date
    assert (hit.sequence_id, hit.score > 0.999) == (during[1].sequence_id, True)
    assert store.stats()[0].index_kind == "exact"

    gate.opened.set()
    assert store.wait_for_index_builds(30)
    big = next(s for s in store.stats() if s.name == "big")
    alive = (before | {crossing[0].sequence_id} | {i.sequence_id for i in during[1:]}) - {removed_old}
    assert (big.index_kind, big.sequences) == ("approximate", len(alive))
    assert store.get_gallery("big").sequence_count == len(alive)
    assert store.get_gallery("other").sequence_count == len(other) == 3
    listed = [
        q.sequence_id
        for s in store.list_subjects("big", 0, 10_000).data
        for q in store.list_sequences("big", s.subject_id)
    ]
    assert sorted(listed) == sorted(alive)  # nothing lost, nothing doubled
    for x, info in zip(during_x[1:], during[1:], strict=True):  # replayed onto the new index
        assert store.search("big", x, MODEL, k=1)[0].sequence_id == info.sequence_id
    found = {h.sequence_id for x in during_x[:1] for h in store.search("big", x, MODEL, k=5)}
    assert during[0].sequence_id not in found and removed_old not in found


def test_closing_during_a_retrain_abandons_it_and_keeps_every_sequence(monkeypatch, tmp_path) -> None:
    rng = np.random.default_rng(1)
    gate = Gate(monkeypatch)
    path = tmp_path / "g.db"
    store = LocalStore(path, index_settings=SETTINGS, synchronous="NORMAL")
    store.create_gallery("g", MODEL, LAYOUT)
    gate.armed = True
    for s in range(EXACT_MAX // 5 + 1):
        store.enroll("g", f"s{s}", vectors(rng, 5), MODEL)
    assert gate.entered.wait(PROMPT_S)
    closing = threading.Thread(target=store.close)
    closing.start()
    gate.opened.set()  # the rebuild reads its first chunk, sees the store closing and stops
    closing.join(30)
    assert not closing.is_alive()
    monkeypatch.undo()
    with LocalStore(path, index_settings=SETTINGS) as reopened:
        (stats,) = reopened.stats()
        assert (stats.sequences, stats.index_kind) == (5 * (EXACT_MAX // 5 + 1), "approximate")
