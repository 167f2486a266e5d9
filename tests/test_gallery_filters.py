"""The filter contract every gallery backend implements: attribute parsing and reference semantics."""

from datetime import UTC, datetime

import pytest

from gallery.errors import InvalidInputError
from gallery.filters import SequenceAttributes, SequenceFilter, attributes


def test_attributes_are_parsed_from_the_reserved_metadata_keys():
    attrs = attributes(
        {
            "camera": "gate-2",
            "site": "lab",
            "captured_at": "2026-05-01T14:00:00+02:00",
            "tags": ["a", "b"],
            "x": 1,
        }
    )
    assert attrs.camera == "gate-2" and attrs.site == "lab" and attrs.tags == {"a", "b"}
    assert attrs.captured_at == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert attrs.captured_ts == datetime(2026, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    assert attributes(None) == attributes({"other": "keys only"}) == SequenceAttributes()


@pytest.mark.parametrize(
    "metadata, word",
    [
        ({"camera": ""}, "camera"),
        ({"camera": 3}, "camera"),
        ({"site": "x" * 65}, "site"),
        ({"captured_at": "2026-05-01T12:00:00"}, "UTC offset"),
        ({"captured_at": "yesterday"}, "ISO 8601"),
        ({"tags": "a"}, "tags"),
        ({"tags": [str(i) for i in range(17)]}, "tags"),
        ({"tags": ["ok", "bad\n"]}, "tag"),
    ],
)
def test_malformed_attributes_are_refused_with_the_key_named(metadata, word):
    with pytest.raises(InvalidInputError, match=word):
        attributes(metadata)


def test_filter_semantics_equality_sets_time_range_and_tags():
    seq = attributes(
        {"camera": "c1", "site": "s1", "captured_at": "2026-01-02T00:00:00Z", "tags": ["day", "x"]}
    )
    bare = SequenceAttributes()
    f = SequenceFilter.build
    assert f(camera=["c1"]).matches(seq) and not f(camera=["c2"]).matches(seq)
    assert f(site=["s0", "s1"]).matches(seq) and not f(site=["s0"]).matches(seq)
    assert f(captured_from="2026-01-02T00:00:00Z").matches(seq)  # inclusive start
    assert not f(captured_to="2026-01-02T00:00:00Z").matches(seq)  # exclusive end
    assert f(captured_from="2026-01-01T00:00:00Z", captured_to="2026-01-03T00:00:00+05:00").matches(seq)
    assert f(tags_all=["day"]).matches(seq) and not f(tags_all=["day", "night"]).matches(seq)
    assert f(tags_any=["night", "x"]).matches(seq) and not f(tags_any=["night"]).matches(seq)
    assert f(camera=["c1"], tags_all=["night"]).matches(seq) is False  # conditions are ANDed
    # A sequence without the attribute never satisfies a condition on it; the empty filter takes all.
    assert not f(camera=["c1"]).matches(bare) and not f(captured_from="2000-01-01T00:00:00Z").matches(bare)
    assert SequenceFilter().is_empty and SequenceFilter().matches(bare) and not f(site=["s"]).is_empty


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"camera": []}, "1-256"),
        ({"site": [str(i) for i in range(257)]}, "1-256"),
        ({"captured_from": "2026-01-02T00:00:00Z", "captured_to": "2026-01-01T00:00:00Z"}, "before"),
        ({"captured_to": datetime(2026, 1, 1)}, "UTC offset"),
    ],
)
def test_malformed_filters_are_refused(kwargs, word):
    with pytest.raises(InvalidInputError, match=word):
        SequenceFilter.build(**kwargs)
