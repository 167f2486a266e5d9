"""Which enrolled sequences a search may return: filterable sequence attributes and the filter over them.

A sequence's metadata is a JSON object (gallery.validate bounds its size). Four reserved keys are
*attributes*: validated at enrolment, returned in hits and usable in filters; every other key is stored
and returned but never filtered on:

    camera       str, 1-64 characters         equality or set membership
    site         str, 1-64 characters         equality or set membership
    captured_at  ISO 8601 with a UTC offset   time range [captured_from, captured_to)
    tags         list of up to 16 str         all of / any of

A store applies a `SequenceFilter` inside its index search (the local FAISS index through an id
selector, Milvus through a boolean expression over scalar fields), never by over-fetching and dropping,
so `k` hits come back whenever k matching subjects exist. `SequenceFilter.matches` is the reference
semantics every store must agree with (tests compare against it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gallery.errors import InvalidInputError

ATTRIBUTE_KEYS = ("camera", "site", "captured_at", "tags")
VALUE_RE = re.compile(r"[^\x00-\x1f\x7f]{1,64}")  # printable, 1-64 characters
MAX_TAGS = 16
MAX_FILTER_VALUES = 256  # per set in a filter: bounds the expression a store evaluates


@dataclass(frozen=True)
class SequenceAttributes:
    """The filterable part of one sequence's metadata; None / empty where the metadata does not say."""

    camera: str | None = None
    site: str | None = None
    captured_at: datetime | None = None  # timezone-aware, UTC
    tags: frozenset[str] = frozenset()

    @property
    def captured_ts(self) -> float | None:
        """`captured_at` as UTC epoch seconds: what stores keep and compare."""
        return None if self.captured_at is None else self.captured_at.timestamp()


def _value(raw: Any, what: str) -> str:
    if not isinstance(raw, str) or not VALUE_RE.fullmatch(raw):
        raise InvalidInputError(f"{what} must be a string of 1-64 printable characters, not {raw!r}")
    return raw


def parse_time(raw: Any, what: str) -> datetime:
    """An ISO 8601 time with an explicit UTC offset (a naive time is ambiguous: refused) -> aware UTC."""
    if not isinstance(raw, str):
        raise InvalidInputError(f"{what} must be an ISO 8601 string with a UTC offset, not {raw!r}")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{what} is not an ISO 8601 time: {raw!r}") from exc
    if value.tzinfo is None:
        raise InvalidInputError(f"{what} needs a UTC offset (e.g. 2026-05-01T12:00:00Z), got {raw!r}")
    return value.astimezone(UTC)


def attributes(metadata: Mapping[str, Any] | None) -> SequenceAttributes:
    """Validate and extract the attribute keys of one sequence's metadata (InvalidInputError if malformed)."""
    if not metadata:
        return SequenceAttributes()
    camera = metadata.get("camera")
    site = metadata.get("site")
    captured = metadata.get("captured_at")
    tags = metadata.get("tags", [])
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise InvalidInputError(f"metadata tags must be a list of at most {MAX_TAGS} strings")
    return SequenceAttributes(
        camera=None if camera is None else _value(camera, "metadata camera"),
        site=None if site is None else _value(site, "metadata site"),
        captured_at=None if captured is None else parse_time(captured, "metadata captured_at"),
        tags=frozenset(_value(tag, "a metadata tag") for tag in tags),
    )


def _value_set(raw: Iterable[str] | None, what: str) -> frozenset[str] | None:
    if raw is None:
        return None
    values = frozenset(_value(v, what) for v in raw)
    if not values or len(values) > MAX_FILTER_VALUES:
        raise InvalidInputError(f"a filter on {what} needs 1-{MAX_FILTER_VALUES} values")
    return values


@dataclass(frozen=True)
class SequenceFilter:
    """Conditions that all must hold (AND). A set field matches when the attribute is one of its values
    (a set of one is equality); a sequence without the attribute never matches a condition on it."""

    camera: frozenset[str] | None = None
    site: frozenset[str] | None = None
    captured_from: datetime | None = None  # inclusive, aware
    captured_to: datetime | None = None  # exclusive, aware
    tags_all: frozenset[str] = frozenset()  # every one present
    tags_any: frozenset[str] | None = None  # at least one present

    @classmethod
    def build(
        cls,
        *,
        camera: Iterable[str] | None = None,
        site: Iterable[str] | None = None,
        captured_from: str | datetime | None = None,
        captured_to: str | datetime | None = None,
        tags_all: Iterable[str] = (),
        tags_any: Iterable[str] | None = None,
    ) -> SequenceFilter:
        """A validated filter from wire values (ISO strings or aware datetimes for the time bounds)."""

        def when(raw: str | datetime | None, what: str) -> datetime | None:
            if raw is None or isinstance(raw, datetime):
                if isinstance(raw, datetime) and raw.tzinfo is None:
                    raise InvalidInputError(f"{what} needs a UTC offset")
                return None if raw is None else raw.astimezone(UTC)
            return parse_time(raw, what)

        start, end = when(captured_from, "captured_from"), when(captured_to, "captured_to")
        if start is not None and end is not None and start >= end:
            raise InvalidInputError("captured_from must be before captured_to")
        all_tags = _value_set(tags_all, "tags") if tags_all else frozenset()
        return cls(
            camera=_value_set(camera, "camera"),
            site=_value_set(site, "site"),
            captured_from=start,
            captured_to=end,
            tags_all=all_tags or frozenset(),
            tags_any=_value_set(tags_any, "tags"),
        )

    @property
    def is_empty(self) -> bool:
        return self == SequenceFilter()

    def matches(self, attrs: SequenceAttributes) -> bool:
        """The reference semantics (every store's results must agree with this)."""
        if self.camera is not None and attrs.camera not in self.camera:
            return False
        if self.site is not None and attrs.site not in self.site:
            return False
        if self.captured_from is not None or self.captured_to is not None:
            if attrs.captured_at is None:
                return False
            if self.captured_from is not None and attrs.captured_at < self.captured_from:
                return False
            if self.captured_to is not None and attrs.captured_at >= self.captured_to:
                return False
        if not self.tags_all <= attrs.tags:
            return False
        return self.tags_any is None or bool(self.tags_any & attrs.tags)
