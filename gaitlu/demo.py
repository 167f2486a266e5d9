"""`gaitlu demo`: the README main job, composed from the public commands a user would type.

Generates a synthetic GaitLU-style corpus, packs and verifies it, generates a labelled CASIA-B-style set
and prints the GEI baseline table. Each step is skipped when its output already exists, so a rerun is fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False)
console = Console()


def _step(title: str, args: list[str], done_marker: Path | None = None) -> None:
    """Run one `gaitlu` command in-process; with `done_marker`, only once (marked after success)."""
    from gaitlu.cli import cli

    if done_marker is not None and done_marker.exists():
        console.print(f"[dim]- {title}: already done[/dim]")
        return
    console.rule(f"{title}: gaitlu {' '.join(args)}")
    cli.main(args=args, prog_name="gaitlu", standalone_mode=False)
    if done_marker is not None:
        done_marker.parent.mkdir(parents=True, exist_ok=True)
        done_marker.touch()


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo writes its corpora and shards.")] = Path(
        ".data"
    ),
    unlabelled_subjects: Annotated[int, typer.Option(help="Identities in the unlabelled corpus.")] = 100,
    labelled_subjects: Annotated[int, typer.Option(help="Subjects in the labelled CASIA-B-style set.")] = 60,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
) -> None:
    """Generate, pack and verify a synthetic corpus, then print the GEI baseline under CASIA-B."""
    unlabelled = data_dir / "synth-gaitlu"
    shards = data_dir / "synth-gaitlu-shards"
    labelled = data_dir / "synth-casiab"
    _step(
        "Synthetic unlabelled corpus (GaitLU-1M layout)",
        [
            "synth",
            "--out",
            str(unlabelled),
            "--subjects",
            str(unlabelled_subjects),
            "--seed",
            str(seed),
            "--layout",
            "gaitlu",
        ],
        done_marker=data_dir / ".done" / "synth-gaitlu",
    )
    _step("Pack into shards", ["data", "pack", str(unlabelled / "silhouette_cut_pkl"), "--out", str(shards)])
    _step("Verify shards", ["data", "verify", str(shards)])
    _step(
        "Synthetic labelled set (CASIA-B layout)",
        [
            "synth",
            "--out",
            str(labelled),
            "--subjects",
            str(labelled_subjects),
            "--seed",
            str(seed + 1),
            "--layout",
            "opengait",
        ],
        done_marker=data_dir / ".done" / "synth-casiab",
    )
    _step(
        "GEI baseline, CASIA-B protocol",
        ["eval", "--baseline", "gei", "--dataset", str(labelled), "--protocol", "casia-b"],
    )
