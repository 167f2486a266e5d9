"""Errors of the export stage: user-facing (the CLI prints them and exits 2)."""

from gaitlu.errors import GaitluError


class ExportError(GaitluError):
    """The checkpoint could not be exported as asked (bad options, missing inputs, failed checks)."""


class ParityError(ExportError):
    """The exported graph does not reproduce PyTorch within the tolerance: nothing is written as final."""
