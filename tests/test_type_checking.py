"""The type checker's configuration covers the whole source: every package the wheel ships is checked
strictly, and nothing is waved through wholesale (`make test` runs mypy after ruff)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def checked_sources() -> list[Path]:
    """Every .py file mypy is told to check (its `files`: packages and single scripts)."""
    paths = [ROOT / entry for entry in config()["tool"]["mypy"]["files"]]
    return sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))


def test_every_shipped_package_is_checked_strictly() -> None:
    tool = config()["tool"]
    shipped = {p.rstrip("*") for p in tool["setuptools"]["packages"]["find"]["include"]}
    files = set(tool["mypy"]["files"])
    assert shipped <= files, f"shipped but not type-checked: {sorted(shipped - files)}"
    scripts = files - shipped
    assert all((ROOT / s).is_file() and s.endswith(".py") for s in scripts), f"not a script: {scripts}"
    assert tool["mypy"]["strict"] is True
    relaxed = {"disallow_untyped_defs", "check_untyped_defs", "ignore_errors", "disable_error_code"}
    for override in tool["mypy"].get("overrides", []):
        assert not relaxed & set(override), f"{override['module']} relaxes {relaxed & set(override)}"


def test_every_type_ignore_names_its_error_code() -> None:
    bare = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in checked_sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "type: ignore" in line and "type: ignore[" not in line
    ]
    assert not bare, f"a bare `type: ignore` hides every error on its line: {bare}"
