"""Gallery errors: each names one situation the service maps to one HTTP status (given in the docstring)."""

from gaitlu.errors import GaitluError


class GalleryError(GaitluError):
    """Base class of every gallery failure meant for the user."""


class InvalidInputError(GalleryError, ValueError):
    """A name, id, embedding or metadata value is malformed (HTTP 422)."""


class NotFoundError(GalleryError, LookupError):
    """Something named in the request does not exist (HTTP 404)."""


class GalleryNotFoundError(NotFoundError):
    """No gallery has this name."""


class SubjectNotFoundError(NotFoundError):
    """The gallery has no subject with this id."""


class SequenceNotFoundError(NotFoundError):
    """The gallery has no sequence with this id."""


class ConflictError(GalleryError):
    """The request contradicts what is stored (HTTP 409)."""


class GalleryExistsError(ConflictError):
    """A gallery with this name already exists."""


class SequenceIdConflictError(ConflictError):
    """A client-supplied sequence id already exists with another subject or another embedding."""


class ModelMismatchError(ConflictError):
    """Embeddings from one model were offered to a gallery built with another (HTTP 409).

    Scores between two models' embeddings are meaningless, so the store refuses rather than answer.
    """

    def __init__(self, gallery: str, gallery_hash: str, given_hash: str) -> None:
        self.gallery = gallery
        self.gallery_hash = gallery_hash
        self.given_hash = given_hash
        super().__init__(
            f"gallery '{gallery}' holds embeddings of model {gallery_hash[:12]}..., but these come from "
            f"model {given_hash[:12]}...; serve the gallery's model, or enrol the subjects again into a new "
            f"gallery with this model (`gaitlu enroll DATASET --gallery NEW --create`)"
        )


class StoreClosedError(GalleryError):
    """The store was used after close() (HTTP 503: the service is shutting down)."""


class StoreLockedError(GalleryError):
    """Another process has this gallery database open; one process owns a store at a time."""


class StoreFullError(GalleryError):
    """The gallery database could not be written for lack of space: its disk is full, or it reached its
    size limit (`max_bytes`). The write was rolled back whole: nothing of it was stored (HTTP 507)."""

    def __init__(self, cause: str) -> None:
        super().__init__(
            f"the gallery store is full ({cause}): nothing was written; free space on the disk holding "
            "the gallery database (or raise its size limit) and retry"
        )
        self.cause = cause


class StoreUnavailableError(GalleryError):
    """The gallery server (Milvus) did not answer or failed; nothing was acknowledged (HTTP 503)."""


class EncryptionKeyError(GalleryError):
    """The store's master key is missing, malformed or not the one its data was encrypted with; a start
    refuses rather than serve data it cannot read (gallery/crypto.py)."""


class TamperedDataError(GalleryError):
    """A stored ciphertext failed authentication: it was altered, moved to another row or written under
    another key. Reported rather than answered with garbage (HTTP 500, `tampered_data`)."""
