"""Errors that carry a message meant for the user: the CLI prints them, the service maps them to 4xx."""

from __future__ import annotations

from collections.abc import Sequence


class GaitluError(Exception):
    """Base class: the message is shown to the user as is."""


class SequenceError(GaitluError, ValueError):
    """A silhouette sequence could not be read or is not valid input."""


class UnsafePickleError(SequenceError):
    """A pickle tried to build something other than a numpy array; nothing was executed."""


class DataError(GaitluError):
    """A dataset, corpus or shard is missing, malformed or corrupt."""


class ConfigError(GaitluError):
    """A configuration file or option is invalid."""


def listing(names: Sequence[str], limit: int = 10) -> str:
    """Names for a message: the first `limit`, comma-separated, and " ..." when there are more."""
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")
