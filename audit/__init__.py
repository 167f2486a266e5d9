"""The audit trail: an append-only, hash-chained record of every search, verify, enrolment,
deletion and gallery change, with reviews of matches by two distinct keys and its own retention.

The store (audit/store.py) is plain SQLite and knows no HTTP; the service records into it (service/
auditing.py) and serves it (`GET /audit`); `gaitlu audit verify / export / sweep` read it offline.
"""

from audit.errors import AlreadyReviewed, AuditError, AuditRecordNotFound, AuditWriteFailed, NotReviewable
from audit.store import (
    ACTIONS,
    AUDIT_FILE,
    REQUIRED_CONFIRMATIONS,
    Action,
    AuditQuery,
    AuditStore,
    ChainReport,
    Decision,
    Entry,
    Hit,
    Record,
    ReviewState,
    Verdict,
    key_id,
    sha256_hex,
)

__all__ = [
    "ACTIONS",
    "AUDIT_FILE",
    "REQUIRED_CONFIRMATIONS",
    "Action",
    "AlreadyReviewed",
    "AuditError",
    "AuditQuery",
    "AuditRecordNotFound",
    "AuditStore",
    "AuditWriteFailed",
    "ChainReport",
    "Decision",
    "Entry",
    "Hit",
    "NotReviewable",
    "Record",
    "ReviewState",
    "Verdict",
    "key_id",
    "sha256_hex",
]
