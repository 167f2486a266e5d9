"""Portable galleries: `gaitlu galleries export / import` between backends, identical search results after
a round trip, memory bounded by the chunk whatever the gallery's size, and files that are not whole
refused before anything is written."""

from __future__ import annotations

import hashlib
import io
import tarfile
import tracemalloc

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout
from gallery import GalleryExistsError, GalleryNotFoundError, LocalStore
from gallery.portable import PortableFormatError, check_file, export_gallery, import_gallery
from tests.support.cli import run_cli
from tests.support.embeddings import clustered_embeddings
from tests.support.milvus import unique_db

MODEL = hashlib.sha256(b"portable").hexdigest()
LAYOUT = EmbeddingLayout(parts=4, part_dim=16)


def filled_store(path, subjects: int, per_subject: int, layout: EmbeddingLayout = LAYOUT, seed: int = 0):
    x, labels = clustered_embeddings(
        subjects, per_subject, layout, noise=0.5, rng=np.random.default_rng(seed)
    )
    store = LocalStore(path, synchronous="NORMAL")
    store.create_gallery("lab", MODEL, layout, metadata={"site": "lab", "n": 1})
    for s in range(subjects):
        rows = np.flatnonzero(labels == s)
        meta = [{"camera": f"cam-{i % 3}", "tags": ["walk"], "i": int(i)} for i in rows]
        store.enroll("lab", f"subject-{s:03d}", x[rows], MODEL, meta, [f"seq-{i:05d}" for i in rows])
    return store, x


def test_round_trip_local_milvus_local_gives_identical_searches(tmp_path, capsys, milvus_uri):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    store, x = filled_store(first / "galleries.db", 40, 5)
    queries = x[::9] + np.float32(0.05)
    before = store.search_batch("lab", queries, MODEL, k=7, top_m=2)
    infos = {s.sequence_id: s for page in [store.list_subjects("lab", 0, 100)] for subj in page.data
             for s in store.list_sequences("lab", subj.subject_id)}  # fmt: skip
    store.close()

    milvus = ["--store", "milvus", "--milvus-uri", milvus_uri, "--milvus-db", unique_db()]
    a, b = tmp_path / "a.gallery", tmp_path / "b.gallery"
    result = run_cli(capsys, "galleries", "export", "lab", "--out", a, "--data-dir", first, "--json")
    assert result.code == 0 and result.json()["sequences"] == 200, result.err
    older = ["--backend" if arg == "--store" else arg for arg in milvus]  # --store's older name works too
    result = run_cli(capsys, "galleries", "import", a, "--as", "lab-copy", *older, "--json")
    assert result.code == 0 and result.json() == {"gallery": "lab-copy", "sequences": 200, "chunks": 1,
                                                   "file": str(a)}, result.err  # fmt: skip
    assert run_cli(capsys, "galleries", "export", "lab-copy", "--out", b, *milvus).code == 0
    assert run_cli(capsys, "galleries", "import", b, "--as", "lab", "--data-dir", second).code == 0

    with LocalStore(second / "galleries.db") as back:
        after = back.search_batch("lab", queries, MODEL, k=7, top_m=2)
        info = back.get_gallery("lab")
        assert (info.sequence_count, info.subject_count, info.metadata) == (200, 40, {"site": "lab", "n": 1})
        for sequence_id, original in list(infos.items())[::17]:
            copy = back.get_sequence("lab", sequence_id)
            assert (copy.subject_id, copy.metadata) == (original.subject_id, original.metadata)
    for old, new in zip(before, after, strict=True):
        assert [(h.subject_id, h.sequence_id) for h in old] == [(h.subject_id, h.sequence_id) for h in new]
        np.testing.assert_allclose([h.score for h in old], [h.score for h in new], atol=1e-6)
    # The same file into an existing gallery is refused unless resumed; resuming adds nothing twice.
    again = run_cli(capsys, "galleries", "import", b, "--as", "lab", "--data-dir", second)
    assert again.code == 2 and "already exists" in again.err
    assert (
        run_cli(capsys, "galleries", "import", b, "--as", "lab", "--data-dir", second, "--resume").code == 0
    )
    with LocalStore(second / "galleries.db") as back:
        assert back.get_gallery("lab").sequence_count == 200


def transient_peak(call) -> int:
    """Python memory a call holds at its peak beyond what it keeps (tracemalloc: peak - retained)."""
    tracemalloc.start()
    try:
        call()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - current


@pytest.mark.slow
def test_export_and_import_stream_in_memory_bounded_by_the_chunk(tmp_path):
    layout = EmbeddingLayout(parts=8, part_dim=64)  # 2 KB per embedding
    chunk = 256  # 512 KB of embeddings per chunk
    peaks = {}
    for subjects in (30, 120):  # 3,000 and 12,000 sequences: 6 MB and 24 MB of embeddings
        folder = tmp_path / str(subjects)
        folder.mkdir()
        store, _ = filled_store(folder / "in.db", subjects, 100, layout, seed=subjects)
        out = folder / "lab.gallery"
        exported = transient_peak(lambda: export_gallery(store, "lab", out, chunk=chunk))  # noqa: B023
        store.close()
        target = LocalStore(folder / "out.db", synchronous="NORMAL")
        imported = transient_peak(lambda: import_gallery(target, out, name="copy"))  # noqa: B023
        assert target.get_gallery("copy").sequence_count == subjects * 100
        target.close()
        peaks[subjects] = (exported, imported)
    gallery_bytes = 12_000 * layout.size * 4
    for small, large in zip(peaks[30], peaks[120], strict=True):
        assert large < gallery_bytes / 4  # far below holding the gallery
        assert large < 1.5 * small + 1_000_000  # four times the gallery, about the same memory


def write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_files_that_are_not_whole_are_refused_before_anything_is_written(tmp_path):
    store, _ = filled_store(tmp_path / "g.db", 6, 3)
    good = tmp_path / "good.gallery"
    export_gallery(store, "lab", good, chunk=4)
    assert check_file(good).sequences == 18
    with tarfile.open(good) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    names = [name for name, _ in members]
    assert names[0] == "manifest.json" and names[-1] == "end.json" and len(names) == 2 + 2 * 5
    cases = {
        "cut short": members[:-3],
        "no end": members[:-1],
        "tampered": [*members[:3], (members[3][0], members[3][1][:-4] + b"\0\0\0\0"), *members[4:]],
        "short vectors": [*members[:2], (members[2][0], members[2][1][:-4]), *members[3:]],
        "reordered": [members[0], members[2], members[1], *members[3:]],
        "other version": [
            ("manifest.json", members[0][1].replace(b'"version": 1', b'"version": 9')),
            *members[1:],
        ],
    }
    for label, content in cases.items():
        bad = tmp_path / f"{label}.gallery"
        write_tar(bad, content)
        with pytest.raises(PortableFormatError):
            import_gallery(store, bad, name="never")
        with pytest.raises(GalleryNotFoundError):
            store.get_gallery("never")  # checked whole before the gallery is created
    (tmp_path / "text.gallery").write_text("not a tar file")
    with pytest.raises(PortableFormatError):
        check_file(tmp_path / "text.gallery")
    with pytest.raises(GalleryExistsError, match="--resume"):
        import_gallery(store, good)  # "lab" exists
    store.close()
