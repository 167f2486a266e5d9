"""`gaitlu export CKPT --out DIR`: the export stage's command (wired lazily by gaitlu/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from export.checks import PARITY_GRIDS
from export.errors import ExportError
from export.pipeline import ExportOptions, export_artifact

app = typer.Typer(add_completion=False)
console = Console(stderr=True)


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="A gaitlu checkpoint (.pt) to export.")],
    out: Annotated[Path, typer.Option("--out", help="Artifact folder to write (created if missing).")],
    opset: Annotated[int, typer.Option(help="ONNX opset (18 or higher).")] = 18,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write model.fp16.onnx (float32 I/O).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx (static QDQ).")] = False,
    trt: Annotated[bool, typer.Option("--trt", help="Also build a TensorRT fp16 plan (GPU host).")] = False,
    max_batch: Annotated[int, typer.Option(help="Largest batch (TensorRT profile).", min=1)] = 32,
    max_frames: Annotated[
        int, typer.Option(help="Longest sequence; longer ones keep their first frames.", min=1)
    ] = 720,
    calibration: Annotated[
        Path | None,
        typer.Option(help="Real silhouette sequences to calibrate --int8 (default: synthetic walks)."),
    ] = None,
    parity: Annotated[
        str, typer.Option(help="Parity grid vs PyTorch: quick (each size once) or full (all 12 pairs).")
    ] = "quick",
) -> None:
    """Export a checkpoint of any registered architecture to an ONNX artifact (model.onnx + manifest.json),
    checked against PyTorch. The graph outputs the model's own embedding; the manifest names the
    architecture and records the service's normalisation step separately."""
    if parity not in PARITY_GRIDS:
        raise ExportError(f"--parity must be one of {sorted(PARITY_GRIDS)}, not {parity!r}")
    options = ExportOptions(
        opset=opset,
        fp16=fp16,
        int8=int8,
        trt=trt,
        max_batch=max_batch,
        max_frames=max_frames,
        calibration=calibration,
        parity=parity,  # type: ignore[arg-type]
    )
    with console.status("exporting"):
        result = export_artifact(checkpoint, out, options)
    manifest = result.manifest
    out_spec = manifest.output
    console.print(
        f"{manifest.model.name}: embedding {out_spec.parts} x {out_spec.part_dim}, output normalisation "
        f"{out_spec.normalisation}; the service applies {manifest.indexing.normalisation} before indexing"
        + (f"; OpenGait evaluates it with metric {manifest.evaluation.metric}" if manifest.evaluation else "")
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(
        f"parity ({manifest.parity.mode}): min cosine {manifest.parity.min_cosine:.8f}, "
        f"max abs diff {manifest.parity.max_abs_diff:.2e}"
    )
    for name, variant in manifest.variants.items():
        if variant.quality is not None:
            q = variant.quality
            console.print(
                f"{name}: min cosine vs fp32 {q.min_cosine:.6f}, Rank-1 {q.rank1_fp32:.1f} -> {q.rank1:.1f} "
                f"on synthetic people ({q.note})"
            )
    typer.echo(f"{out / 'model.onnx'} sha256={manifest.model_sha256}")
