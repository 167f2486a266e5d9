"""Write one section of benchmarks/RESULTS.md, leaving the other benchmarks' sections alone."""

from __future__ import annotations

import re
from pathlib import Path

from gaitlu.files import write_atomic

RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace the section that `text` starts with (its `## ` heading line) or append it; atomic write."""
    heading = text.splitlines()[0]
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    write_atomic(path, updated.rstrip("\n") + "\n")
