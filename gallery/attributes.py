"""A gallery's filterable attributes in memory, beside its index: which index ids a `SequenceFilter` keeps.

The local store filters inside the FAISS search (an id selector over the matching ids), so it needs the
matching ids before searching; evaluating a filter over a Python dict per sequence would cost seconds
per query at a million sequences. The table keeps one numpy column per attribute (camera and site as
dictionary codes, capture time as UTC microseconds, the subject as a code) and an inverted index per
tag, so a filter is a few vectorised comparisons. `SequenceFilter.matches` stays the reference: the
tests check that both agree.

Rows are slots; a removed row leaves a dead slot until the dead outnumber the live, then the columns
are compacted. Not thread-safe: the store changes and reads it under the gallery's lock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import numpy as np

from gallery.filters import SequenceAttributes, SequenceFilter

NO_CODE = -1  # camera / site not given
NO_TIME = np.iinfo(np.int64).min  # captured_at not given
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_CAPACITY = 1024


def microseconds(when: datetime) -> int:
    """An aware datetime as exact integer microseconds since the epoch (floats would round)."""
    return (when - EPOCH) // timedelta(microseconds=1)


class _Codes:
    """Strings <-> small integer codes (never shrinks: codes stay valid while slots refer to them)."""

    def __init__(self) -> None:
        self.code: dict[str, int] = {}
        self.names: list[str] = []

    def encode(self, value: str | None) -> int:
        if value is None:
            return NO_CODE
        found = self.code.get(value)
        if found is None:
            found = self.code[value] = len(self.names)
            self.names.append(value)
        return found

    def lookup(self, values: Iterable[str]) -> np.ndarray:
        """The codes of the values that occur (unknown values match nothing)."""
        return np.array([self.code[v] for v in values if v in self.code], dtype=np.int32)


class AttributeTable:
    """Index id -> (subject, camera, site, captured_at, tags) of a gallery's sequences, as columns."""

    def __init__(self) -> None:
        self._slot: dict[int, int] = {}  # index id -> slot
        self._ids = np.zeros(MIN_CAPACITY, np.int64)
        self._alive = np.zeros(MIN_CAPACITY, bool)
        self._subject = np.zeros(MIN_CAPACITY, np.int32)
        self._camera = np.full(MIN_CAPACITY, NO_CODE, np.int32)
        self._site = np.full(MIN_CAPACITY, NO_CODE, np.int32)
        self._time = np.full(MIN_CAPACITY, NO_TIME, np.int64)
        self._tags: defaultdict[str, set[int]] = defaultdict(set)  # tag -> slots holding it
        self._by_uid: dict[str, int] = {}  # sequence id -> slot, to return a hit's attributes
        self._row: list[tuple[str, SequenceAttributes]] = []  # slot -> (sequence id, attributes)
        self._used = 0  # slots handed out (live and dead)
        self._subjects, self._cameras, self._sites = _Codes(), _Codes(), _Codes()

    def __len__(self) -> int:
        return len(self._slot)

    def add(
        self, ids: Iterable[int], subject_id: str, uids: Iterable[str], attrs: Iterable[SequenceAttributes]
    ) -> None:
        subject = self._subjects.encode(subject_id)
        for row, uid, a in zip(ids, uids, attrs, strict=True):
            if row in self._slot:
                self.remove([row])
            self._grow()
            slot = self._used
            self._used += 1
            self._slot[int(row)] = slot
            self._by_uid[uid] = slot
            self._row.append((uid, a))
            self._ids[slot], self._alive[slot], self._subject[slot] = row, True, subject
            self._camera[slot] = self._cameras.encode(a.camera)
            self._site[slot] = self._sites.encode(a.site)
            self._time[slot] = NO_TIME if a.captured_at is None else microseconds(a.captured_at)
            for tag in a.tags:
                self._tags[tag].add(slot)

    def remove(self, ids: Iterable[int]) -> None:
        for row in ids:
            slot = self._slot.pop(int(row), None)
            if slot is None:
                continue
            self._alive[slot] = False
            self._by_uid.pop(self._row[slot][0], None)
        if self._used - len(self._slot) > max(MIN_CAPACITY, len(self._slot)):
            self._compact()

    def get(self, sequence_id: str) -> SequenceAttributes | None:
        """The attributes of a live sequence (None for one that is not in the table)."""
        slot = self._by_uid.get(sequence_id)
        return None if slot is None else self._row[slot][1]

    def select(self, sequence_filter: SequenceFilter) -> tuple[np.ndarray, dict[str, int]]:
        """The index ids of the live sequences the filter keeps, and each subject's count among them."""
        n = self._used
        keep = self._alive[:n].copy()
        if sequence_filter.camera is not None:
            keep &= np.isin(self._camera[:n], self._cameras.lookup(sequence_filter.camera))
        if sequence_filter.site is not None:
            keep &= np.isin(self._site[:n], self._sites.lookup(sequence_filter.site))
        if sequence_filter.captured_from is not None or sequence_filter.captured_to is not None:
            times = self._time[:n]
            keep &= times != NO_TIME
            if sequence_filter.captured_from is not None:
                keep &= times >= microseconds(sequence_filter.captured_from)
            if sequence_filter.captured_to is not None:
                keep &= times < microseconds(sequence_filter.captured_to)
        for tag in sequence_filter.tags_all:
            keep &= self._has(tag, n)
        if sequence_filter.tags_any is not None:
            anyof = np.zeros(n, bool)
            for tag in sequence_filter.tags_any:
                anyof |= self._has(tag, n)
            keep &= anyof
        counts = np.bincount(self._subject[:n][keep], minlength=len(self._subjects.names))
        sizes = {self._subjects.names[code]: int(counts[code]) for code in np.flatnonzero(counts)}
        return self._ids[:n][keep], sizes

    def _has(self, tag: str, n: int) -> np.ndarray:
        mask = np.zeros(n, bool)
        slots = self._tags.get(tag)
        if slots:
            mask[np.fromiter(slots, np.int64, len(slots))] = True
        return mask

    def _grow(self) -> None:
        if self._used < len(self._ids):
            return
        size = 2 * len(self._ids)
        for name, fill in (
            ("_ids", 0),
            ("_alive", False),
            ("_subject", 0),
            ("_camera", NO_CODE),
            ("_site", NO_CODE),
            ("_time", NO_TIME),
        ):
            old = getattr(self, name)
            new = np.full(size, fill, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def _compact(self) -> None:
        """Drop dead slots: live ones move to the front, in order; the tag sets are renumbered."""
        live = np.flatnonzero(self._alive[: self._used])
        renumber = {int(old): new for new, old in enumerate(live)}
        for name in ("_ids", "_alive", "_subject", "_camera", "_site", "_time"):
            column = getattr(self, name)
            column[: len(live)] = column[live]
        self._alive[len(live) : self._used] = False
        self._used = len(live)
        self._slot = {int(self._ids[slot]): slot for slot in range(self._used)}
        self._row = [self._row[old] for old in live]
        self._by_uid = {uid: slot for slot, (uid, _) in enumerate(self._row)}
        tags: defaultdict[str, set[int]] = defaultdict(set)
        for tag, slots in self._tags.items():
            kept = {renumber[s] for s in slots if s in renumber}
            if kept:
                tags[tag] = kept
        self._tags = tags
