"""Errors become HTTP statuses in exactly one table (service/errors.py): the engine and the stages raise
domain errors only (and import no HTTP framework: tests/test_import_rules.py)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import audit.errors
import engine.errors
import gallery.errors
import service.errors
import video.errors
from gaitlu.errors import GaitluError
from service.errors import STATUSES, answer

REPO = Path(__file__).resolve().parents[1]
# Base classes (never raised themselves) and what is raised only while a process starts.
NOT_RAISED_IN_A_REQUEST = {
    "GalleryError",
    "EngineError",
    "AuditError",
    "HttpLayerError",
    "NamedProblem",
    "StoreLockedError",
    "EncryptionKeyError",
}


def test_no_row_is_shadowed_by_an_earlier_one() -> None:
    """The first matching row decides: a row below one of its base classes could never be reached."""
    for i, row in enumerate(STATUSES):
        earlier = [r.error.__name__ for r in STATUSES[:i] if issubclass(row.error, r.error)]
        assert not earlier, f"{row.error.__name__} is shadowed by {earlier}"


@pytest.mark.parametrize(
    "module", [engine.errors, gallery.errors, video.errors, service.errors, audit.errors]
)
def test_every_error_a_request_can_meet_has_a_status_of_its_own(module) -> None:
    classes = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, GaitluError) and cls.__module__ == module.__name__
    ]
    assert classes
    for cls in classes:
        if cls.__name__ in NOT_RAISED_IN_A_REQUEST:
            continue
        row = next(r for r in STATUSES if issubclass(cls, r.error))
        assert row.error is not GaitluError, f"{cls.__name__} falls through to the catch-all 400"


def test_the_table_carries_what_a_client_needs() -> None:
    verdict = answer(engine.errors.Overloaded(7, "every video worker is busy"))
    assert (verdict.status, verdict.code, verdict.headers) == (429, "overloaded", {"Retry-After": "7"})
    assert verdict.detail == {"retry_after_s": 7} and "every video worker is busy" in verdict.message
    verdict = answer(service.errors.InvalidRequest("one_file", "search takes one sequence"))
    assert (verdict.status, verdict.code) == (422, "one_file")
    mismatch = answer(gallery.errors.ModelMismatchError("g", "a" * 64, "b" * 64))
    assert mismatch.status == 409 and mismatch.detail["remedy"].startswith("serve the model")


def _int_literals(path: Path) -> list[tuple[int, int]]:
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and type(node.value) is int and 400 <= node.value < 600
    ]


def test_no_status_is_picked_outside_the_table() -> None:
    table = REPO / "service" / "errors.py"
    found = {
        str(path.relative_to(REPO)): literals
        for path in sorted((REPO / "service").rglob("*.py"))
        if path != table and (literals := _int_literals(path))
    }
    assert found == {}, f"HTTP status numbers outside service/errors.py: {found}"
