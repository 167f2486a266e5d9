"""Shard encoding, packing (sizes, grey pixels, resumability) and the corpus readers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from corpus import codec
from corpus.index import index_tree
from corpus.pack import pack_corpus
from corpus.reader import ShardedCorpus, TreeCorpus, epoch_indices, open_corpus
from corpus.shard import load_footer, shard_name, write_shard
from gaitlu.errors import DataError
from gaitlu.safepickle import dumps_array
from tests.support.cli import run_cli
from tests.support.corpus import make_tree, random_masks


@pytest.mark.parametrize("name", codec.CODECS)
@pytest.mark.parametrize("shape", [(1, 64, 44), (37, 64, 44), (5, 64, 64), (3, 7, 5)])
def test_binary_masks_round_trip_exactly(shape, name):
    seq = (np.random.default_rng(1).random(shape) < 0.4).astype(np.uint8) * 255
    out = codec.decode(codec.encode(seq, name), *shape, name)
    assert out.dtype == np.uint8 and np.array_equal(out, seq)


@pytest.mark.parametrize("name", codec.CODECS)
def test_grey_levels_are_thresholded_at_128_and_counted(name):
    seq = np.array([[[0, 1, 127, 128, 200, 255]]], dtype=np.uint8)  # (1, 1, 6)
    out = codec.decode(codec.encode(seq, name), 1, 1, 6, name)
    assert out.tolist() == [[[0, 0, 0, 255, 255, 255]]]
    assert codec.count_nonbinary(seq) == 4


@pytest.mark.parametrize("name", codec.CODECS)
def test_corrupt_payload_is_a_data_error(name):
    payload = codec.encode(np.zeros((2, 64, 44), np.uint8), name)
    with pytest.raises(DataError):
        codec.decode(payload[:-3], 2, 64, 44, name)
    with pytest.raises(DataError, match="needs"):
        codec.decode(payload, 3, 64, 44, name)
    with pytest.raises(DataError, match="unknown shard codec"):
        codec.decode(payload, 2, 64, 44, "lz5")


def test_shard_footer_indexes_every_record(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [random_masks(rng, n) for n in (3, 10, 1)]
    write_shard(tmp_path / "s.gls", zip(["a", "b", "c"], seqs, strict=True), {"note": 1})
    footer = load_footer(tmp_path / "s.gls")
    assert footer.ids == ["a", "b", "c"] and footer.meta["note"] == 1
    assert footer.entries["frames"].tolist() == [3, 10, 1]
    assert (np.diff(footer.entries["offset"].astype(int)) == footer.entries["length"][:-1]).all()


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    seqs = make_tree(root, 23)
    summary = pack_corpus(root, root / "shards", shard_size=5, workers=1)
    return root, seqs, summary


def test_pack_is_exact_and_much_smaller_than_the_pickles(packed):
    root, seqs, summary = packed
    assert (summary.shards, summary.sequences) == (5, 23)
    assert summary.frames == sum(len(s) for s in seqs.values())
    assert summary.size_ratio >= 6, summary
    assert summary.nonbinary_pixels == 0
    corpus = ShardedCorpus(root / "shards")
    assert sorted(corpus.ids) == sorted(seqs)
    for seq_id, seq in seqs.items():
        assert np.array_equal(corpus.get(seq_id), seq)


def test_random_access_by_id_and_index(packed):
    root, seqs, _ = packed
    corpus = ShardedCorpus(root / "shards")
    assert len(corpus) == 23
    for i in (0, 7, 22, -1):
        assert np.array_equal(corpus.get(i), seqs[corpus.ids[i]])
    assert corpus.index_of(corpus.ids[13]) == 13
    with pytest.raises(DataError, match="no sequence"):
        corpus.get("999_999_999")
    with pytest.raises(IndexError):
        corpus.get(23)


def test_tree_and_shards_give_the_same_corpus(packed, tmp_path):
    root, seqs, _ = packed
    sharded, tree = open_corpus(root / "shards"), open_corpus(root)
    assert isinstance(sharded, ShardedCorpus) and isinstance(tree, TreeCorpus)
    assert list(sharded.ids) == list(tree.ids)
    index_tree(root, tmp_path / "m.jsonl", min_frames=1)
    from_manifest = open_corpus(tmp_path / "m.jsonl")
    assert list(from_manifest.ids) == list(tree.ids)
    for corpus in (sharded, tree, from_manifest):
        seq_id, seq = next(corpus.iter_sequences(epoch=0, seed=3))
        assert np.array_equal(seq, seqs[seq_id])


def test_sharded_corpus_survives_pickling_for_spawned_workers(packed):
    root, seqs, _ = packed
    corpus = ShardedCorpus(root / "shards")
    corpus.get(0)  # opens a descriptor
    clone = pickle.loads(pickle.dumps(corpus))
    assert np.array_equal(clone.get(4), seqs[corpus.ids[4]])
    corpus.close()


def test_grey_pixels_and_wide_frames(tmp_path):
    seqs = make_tree(tmp_path, 2)
    grey = random_masks(np.random.default_rng(5), 12, width=64)
    grey[0, 0, 10:14] = [1, 100, 128, 254]  # inside the kept columns 10..53
    grey[1, 5, 0] = 77  # in a cut-away column: not counted, it is not packed
    folder = tmp_path / "silhouette_cut_pkl" / "500" / "000" / "000"
    folder.mkdir(parents=True)
    (folder / "500_000_000.pkl").write_bytes(dumps_array(grey))

    summary = pack_corpus(tmp_path, tmp_path / "shards")

    assert summary.sequences == 3 and summary.nonbinary_pixels == 4 and summary.nonbinary_sequences == 1
    out = ShardedCorpus(tmp_path / "shards").get("500_000_000")
    expected = np.where(grey[:, :, 10:-10] >= 128, 255, 0)
    assert out.shape == (12, 64, 44) and np.array_equal(out, expected)
    assert np.array_equal(ShardedCorpus(tmp_path / "shards").get("000_000_000"), seqs["000_000_000"])


def test_pack_resumes_and_rebuilds_only_missing_or_stale_shards(tmp_path):
    make_tree(tmp_path, 12)
    out = tmp_path / "shards"
    first = pack_corpus(tmp_path, out, shard_size=4)
    kept = (out / shard_name(0)).stat()
    (out / shard_name(1)).unlink()  # interrupted before shard 1 was renamed into place
    write_shard(out / shard_name(2), [("x", np.zeros((1, 64, 44), np.uint8))], {"plan_digest": "other"})

    second = pack_corpus(tmp_path, out, shard_size=4, workers=2)

    assert second.packed_shards == 2
    assert (out / shard_name(0)).stat().st_mtime_ns == kept.st_mtime_ns
    assert (second.bytes, second.sequences) == (first.bytes, first.sequences)
    assert ShardedCorpus(out).ids.tolist() == sorted(ShardedCorpus(out).ids.tolist())


def test_repacking_with_another_codec_rebuilds_everything_and_reads_the_same(tmp_path):
    seqs = make_tree(tmp_path, 6)
    plain = pack_corpus(tmp_path, tmp_path / "shards", shard_size=4)
    zipped = pack_corpus(tmp_path, tmp_path / "shards", shard_size=4, codec_name=codec.PACKBITS_ZLIB)
    assert zipped.packed_shards == 2 and zipped.bytes < plain.bytes
    corpus = ShardedCorpus(tmp_path / "shards")
    assert corpus.codecs == [codec.PACKBITS_ZLIB] * 2
    assert all(np.array_equal(corpus.get(seq_id), seq) for seq_id, seq in seqs.items())


def test_pack_from_manifest_skips_the_files_it_reported(tmp_path):
    seqs = make_tree(tmp_path, 6)
    short = tmp_path / "silhouette_cut_pkl" / "000" / "000" / "000" / "short.pkl"
    short.write_bytes(dumps_array(np.zeros((2, 64, 44), np.uint8)))
    index_tree(tmp_path, tmp_path / "m.jsonl", min_frames=5)
    summary = pack_corpus(tmp_path, tmp_path / "shards", manifest=tmp_path / "m.jsonl")
    assert summary.sequences == len(seqs)
    assert [(r["path"].rsplit("/", 1)[-1], r["status"]) for r in summary.skipped] == [
        ("short.pkl", "too_short")
    ]


@pytest.mark.parametrize("n", [0, 1, 17, 100])
def test_epoch_partition_covers_every_index_exactly_once(n):
    for world_size in (1, 2, 3):
        for num_workers in (1, 2, 4):
            shares = [
                epoch_indices(
                    n, epoch=2, seed=7, rank=r, world_size=world_size, worker_id=w, num_workers=num_workers
                )
                for r in range(world_size)
                for w in range(num_workers)
            ]
            assert sorted(np.concatenate(shares).tolist()) == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_epoch_order_is_fixed_by_seed_and_epoch():
    same = [epoch_indices(50, epoch=1, seed=3, rank=1, world_size=2) for _ in range(2)]
    assert np.array_equal(*same)
    assert not np.array_equal(epoch_indices(50, epoch=1, seed=3), epoch_indices(50, epoch=2, seed=3))
    assert not np.array_equal(epoch_indices(50, epoch=1, seed=3), epoch_indices(50, epoch=1, seed=4))


def test_drop_last_gives_equal_shares():
    shares = [
        epoch_indices(17, 0, 0, rank=r, world_size=2, worker_id=w, num_workers=2)
        for r in (0, 1)
        for w in (0, 1)
    ]
    dropped = [epoch_indices(17, 0, 0, r, 2, w, 2, drop_last=True) for r in (0, 1) for w in (0, 1)]
    assert {len(s) for s in dropped} == {4}
    assert len(set(np.concatenate(dropped).tolist())) == 16
    assert sum(map(len, shares)) == 17


def test_bad_partition_arguments_are_rejected():
    with pytest.raises(ValueError):
        epoch_indices(10, 0, 0, rank=2, world_size=2)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"index\.json"):
        ShardedCorpus(tmp_path)
    with pytest.raises(DataError, match="no such corpus"):
        open_corpus(Path(tmp_path, "absent"))
    (tmp_path / "x.pkl").write_bytes(dumps_array(np.zeros((2, 64, 44), np.uint8)))
    with pytest.raises(DataError, match="manifest"):
        open_corpus(tmp_path / "x.pkl")


def test_pack_cli(tmp_path, capsys):
    make_tree(tmp_path, 5)
    out = tmp_path / "shards"
    pack = ("data", "pack", tmp_path, "--out", out, "--no-progress")
    code, out_text, _ = run_cli(capsys, *pack, "--shard-size", "2")
    assert code == 0 and "3 shards (3 packed now), 5 sequences" in out_text
    code, _, err = run_cli(capsys, *pack, "--codec", "lz5")
    assert code == 2 and "unknown shard codec" in err


def test_tree_reader_reports_a_file_that_went_bad(tmp_path):
    make_tree(tmp_path, 3)
    corpus = TreeCorpus(tmp_path)
    next((tmp_path / "silhouette_cut_pkl").rglob("000_000_001.pkl")).write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        corpus.get("000_000_001")
