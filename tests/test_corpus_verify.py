"""`gaitlu data verify`: damage is found, pinned to sequences, and never stops the other shards' checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from corpus.pack import pack_corpus
from corpus.reader import ShardedCorpus
from corpus.shard import HEADER_SIZE, load_footer, shard_name
from corpus.verify import verify_shards
from gaitlu.errors import DataError
from tests.support.cli import run_cli
from tests.support.corpus import make_tree


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("verify")
    ids = sorted(make_tree(root, 16))
    pack_corpus(root, root / "shards", shard_size=4)
    return root / "shards", ids


@pytest.fixture
def shards(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine[0], tmp_path / "shards"))


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_clean_pack_verifies(shards, capsys):
    assert verify_shards(shards).ok
    assert run_cli(None, "data", "verify", str(shards), "--no-progress").code == 0
    assert "all 4 shards" in capsys.readouterr().out


def test_flipped_byte_names_the_sequence_and_others_are_still_checked(shards, pristine):
    footer = load_footer(shards / shard_name(1))
    entry = footer.entries[2]
    _flip_byte(shards / shard_name(1), int(entry["offset"]) + int(entry["length"]) // 2)
    (shards / shard_name(3)).write_bytes((shards / shard_name(3)).read_bytes()[:-100])  # truncated

    report = verify_shards(shards)

    assert [p.shard for p in report.problems] == [shard_name(1), shard_name(3)]
    flipped, truncated = report.problems
    assert flipped.affected_ids == [footer.ids[2]]
    assert "truncated" in truncated.problem and truncated.affected_count == 4
    ids = pristine[1]
    assert truncated.affected_range == (ids[12], ids[15])  # shard 3 holds the 13th..16th ids


def test_damage_outside_records_and_missing_shards(shards):
    _flip_byte(shards / shard_name(0), HEADER_SIZE - 1)  # header padding: no record touched
    (shards / shard_name(2)).unlink()

    report = verify_shards(shards)

    header_damage, missing = report.problems
    assert header_damage.shard == shard_name(0) and header_damage.affected_count == 0
    assert "sha256" in header_damage.problem
    assert missing.problem == "missing" and missing.affected_count == 4
    assert report.affected_sequences == 4


def test_verify_cli_exits_1_on_damage_and_2_without_an_index(shards, tmp_path, capsys):
    (shards / shard_name(1)).unlink()
    assert run_cli(None, "data", "verify", str(shards), "--no-progress").code == 1
    assert "shard-00001.gls: missing" in capsys.readouterr().err
    assert run_cli(None, "data", "verify", str(tmp_path / "nothing"), "--no-progress").code == 2


def test_reader_can_check_each_record_on_read(shards):
    footer = load_footer(shards / shard_name(0))
    entry = footer.entries[1]
    _flip_byte(shards / shard_name(0), int(entry["offset"]))
    with pytest.raises(DataError, match="crc32"):
        ShardedCorpus(shards, check_crc=True).get(footer.ids[1])
    ShardedCorpus(shards).get(footer.ids[1])  # the fast default trusts the data: verify is the check
