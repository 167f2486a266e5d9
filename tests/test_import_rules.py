"""The import rules of docs/architecture.md, enforced: layers, no torch below training, commands by name.

Imports are read from the source with `ast` (module level and inside functions alike: a lazy import is
still a dependency), and the torch rule is also checked for real, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Lowest first. A package may import its own modules and packages of lower layers, nothing else.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("gaitlu",),  # the core
    ("corpus", "synth", "video"),  # data: GaitLU-1M shards, the synthetic generator, videos
    ("train",),
    ("export",),
    ("runtime", "gallery", "audit"),  # what serving needs: a model, the galleries, the audit trail
    ("engine",),
    ("service", "client"),  # HTTP in, HTTP out (and the offline CLI)
    ("workflows",),  # commands that chain the stages
)
LAYER = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
NEEDS_TORCH = {"train", "export", "workflows"}  # workflows only inside its --checkpoint / train steps
TORCH_FREE = sorted(set(LAYER) - NEEDS_TORCH)
HTTP_SERVERS = {"fastapi", "starlette", "uvicorn"}
# Optional backends: imported by one module each, which is imported only when that backend is chosen.
OPTIONAL = {"pymilvus": "gallery/milvus.py", "milvus_lite": None}
FACE = REPO / "gaitlu" / "cli.py"  # the command face: finds each package's commands by name


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def imports_by_name(path: Path) -> list[int]:
    """Lines that import a module named by a string (importlib.import_module, __import__)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                lines.append(node.lineno)
    return lines


def test_every_package_is_in_a_layer() -> None:
    top_level = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert top_level == set(LAYER)


@pytest.mark.parametrize("package", sorted(LAYER))
def test_imports_go_down_the_layers_only(package: str) -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in modules(package)
        for line, name in imported(path)
        if (top := name.split(".")[0]) in LAYER and top != package and LAYER[top] >= LAYER[package]
    ]
    assert wrong == []


@pytest.mark.parametrize("package", TORCH_FREE)
def test_no_torch_below_training(package: str) -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in modules(package)
        for line, name in imported(path)
        if name.split(".")[0] in {"torch", *NEEDS_TORCH}
    ]
    assert wrong == []


def test_importing_every_torch_free_module_loads_no_torch() -> None:
    names = [
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for package in TORCH_FREE
        for path in modules(package)
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "sys.exit('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:] or "torch was imported"


@pytest.mark.parametrize("package", sorted(set(LAYER) - {"service"}))
def test_only_the_service_imports_an_http_server(package: str) -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in modules(package)
        for line, name in imported(path)
        if name.split(".")[0] in HTTP_SERVERS
    ]
    assert wrong == []


def test_only_the_command_face_imports_by_name_and_it_loads_no_stage() -> None:
    by_name = {
        str(path.relative_to(REPO)): lines
        for package in LAYER
        for path in modules(package)
        if path != FACE and (lines := imports_by_name(path))
    }
    assert by_name == {}
    stages = set(LAYER) - {"gaitlu"}
    code = (
        "import sys, gaitlu.cli\n"
        f"loaded = sorted({{name.split('.')[0] for name in sys.modules}} & {stages!r})\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_optional_backends_are_imported_by_their_module_only_and_only_when_chosen(tmp_path) -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for package in LAYER
        for path in modules(package)
        for line, name in imported(path)
        if (top := name.split(".")[0]) in OPTIONAL and str(path.relative_to(REPO)) != OPTIONAL[top]
    ]
    assert wrong == []
    # The whole service with the local backend open, and the CLI: no pymilvus loaded.
    code = (
        "import sys, pathlib, gallery, gallery.stores, engine, service.app, client.cli\n"
        "store = gallery.stores.open_gallery_store('local', store_path=pathlib.Path(sys.argv[1]) / 'g.db')\n"
        "store.close()\n"
        "sys.exit(sorted({'pymilvus', 'milvus_lite'} & set(sys.modules)) or 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_service_loads_the_local_gallery_store_only_when_it_opens_one() -> None:
    """The routes take the gallery limits from gallery.protocol: serving from Milvus never loads FAISS."""
    code = "import sys, service.app\nsys.exit(sorted({'gallery.store', 'faiss'} & set(sys.modules)) or 0)\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
