"""The type checker's configuration covers the whole source: every package the wheel ships is checked
strictly, and nothing is waved through wholesale (`make test` runs mypy after ruff)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_shipped_package_is_checked_strictly() -> None:
    tool = config()["tool"]
    shipped = {p.rstrip("*") for p in tool["setuptools"]["packages"]["find"]["include"]}
    assert set(tool["mypy"]["files"]) == shipped
    assert tool["mypy"]["strict"] is True
    relaxed = {"disallow_untyped_defs", "check_untyped_defs", "ignore_errors", "disable_error_code"}
    for override in tool["mypy"].get("overrides", []):
        assert not relaxed & set(override), f"{override['module']} relaxes {relaxed & set(override)}"


def test_every_type_ignore_names_its_error_code() -> None:
    bare = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in config()["tool"]["mypy"]["files"]
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "type: ignore" in line and "type: ignore[" not in line
    ]
    assert not bare, f"a bare `type: ignore` hides every error on its line: {bare}"
