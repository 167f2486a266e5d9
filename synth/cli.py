"""`gaitlu synth`: write a synthetic silhouette corpus in the OpenGait (labelled) or GaitLU-1M layout."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from synth.layout import OPENGAIT_SEQUENCES, generate_gaitlu, generate_opengait
from synth.render import CASIA_B, Capture

app = typer.Typer(add_completion=False, no_args_is_help=True)


class Layout(StrEnum):
    opengait = "opengait"
    gaitlu = "gaitlu"


DEFAULT_K = {Layout.opengait: len(OPENGAIT_SEQUENCES), Layout.gaitlu: 4}


@app.command(name="synth")
def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Output folder (created if missing).")],
    subjects: Annotated[int, typer.Option("--subjects", help="Number of synthetic people.")],
    seed: Annotated[int, typer.Option("--seed", help="Same seed -> byte-identical files.")] = 0,
    layout: Annotated[
        Layout, typer.Option("--layout", help="opengait: labelled CASIA-B-like; gaitlu: unlabelled.")
    ] = Layout.opengait,
    sequences_per_subject: Annotated[
        int | None,
        typer.Option(
            "--sequences-per-subject",
            help="Sequences per person (default: opengait 110 = 10 conditions x 11 views; gaitlu 4).",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes (output does not depend on it).")
    ] = 1,
    fps: Annotated[float, typer.Option("--fps", help="Frame rate of the walks (CASIA-B: 25).")] = CASIA_B.fps,
    elevation: Annotated[
        tuple[float, float],
        typer.Option("--elevation", help="Camera elevation range, degrees above the horizontal (LOW HIGH)."),
    ] = CASIA_B.elevation,
    person_px: Annotated[
        int, typer.Option("--person-px", help="Person height in pixels before alignment to 64 rows.")
    ] = CASIA_B.person_px,
) -> None:
    """Generate a synthetic walking-silhouette corpus driven by real CMU motion capture."""
    k = sequences_per_subject or DEFAULT_K[layout]
    capture = Capture(fps=fps, elevation=elevation, person_px=person_px)
    generate = generate_opengait if layout is Layout.opengait else generate_gaitlu
    start = time.perf_counter()
    written = generate(out, subjects, seed=seed, sequences_per_subject=k, workers=workers, capture=capture)
    elapsed = time.perf_counter() - start
    rate = written / elapsed
    typer.echo(
        f"wrote {written} sequences ({layout.value} layout) to {out} in {elapsed:.1f} s ({rate:.0f}/s)"
    )
