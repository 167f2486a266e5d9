"""The audit trail's domain errors (no HTTP here: service/errors.py maps them to statuses)."""

from __future__ import annotations

from gaitlu.errors import GaitluError


class AuditError(GaitluError):
    """Base class of the audit trail's errors."""


class AuditRecordNotFound(AuditError, LookupError):
    """No record with that id (never written, or removed by the retention sweep)."""


class NotReviewable(AuditError):
    """A review of a record that is not a match (only a search's match or a verify's `verified` is)."""


class AlreadyReviewed(AuditError):
    """The same key reviews a record twice: a second confirmation must come from another person."""


class AuditWriteFailed(AuditError):
    """A record could not be made durable (disk full, I/O error): the action is not acknowledged."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"the audit record could not be written: {cause}")
        self.cause = cause
