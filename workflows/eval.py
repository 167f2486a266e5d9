"""`gaitlu eval`: embed a labelled test set with one model source and score it under a protocol.

The three sources share the core's runner (gaitlu.evaluation): `--baseline gei` (numpy), `--checkpoint`
(the train stage's `load_checkpoint_embedder`) and `--artifact` (the runtime's `load_artifact_embedder`).
Each stage is imported when its source is asked for, so `--artifact` needs no torch and `--baseline`
needs neither.

What is scored is the model's own output: a checkpoint's `embed`, an artifact's `embed_output` (its
`embed` normalises for the service's index). An imported model's `evaluation` (OpenGait's evaluator
settings) gives the default metric and the frame limit, so it scores as OpenGait scores it.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gaitlu.errors import ConfigError, DataError
from gaitlu.evaluation.crossview import CrossViewReport
from gaitlu.evaluation.distance import METRICS
from gaitlu.evaluation.embeddings import save_embeddings
from gaitlu.evaluation.gei import gei_embed
from gaitlu.evaluation.protocols import DEFAULT_METRIC, PROTOCOLS, Report, check_partition, evaluate
from gaitlu.evaluation.retrieval import GrewReport
from gaitlu.evaluation.runner import (
    MAX_FRAMES,
    Embed,
    embed_sequences,
    resolve_partition,
    select_test_sequences,
)
from gaitlu.manifest import Evaluation

app = typer.Typer(add_completion=False, no_args_is_help=True)

BASELINES = {"gei": gei_embed}
# Enums give typer its choices (and --help lists them). Their members are the names above, so mypy
# (which needs literal members) sees enums of unknown members: the command takes their `.value`s.
ProtocolName = StrEnum("ProtocolName", {p: p for p in PROTOCOLS})  # type: ignore[misc]
MetricName = StrEnum("MetricName", {m: m for m in METRICS})  # type: ignore[misc]
BaselineName = StrEnum("BaselineName", {b: b for b in BASELINES})  # type: ignore[misc]
NEEDS = {
    "checkpoint": "the train stage (pip install 'gaitlu[train]')",
    "artifact": "the runtime (pip install 'gaitlu[serve]')",
}


def load_source(source: str, path: Path) -> tuple[Embed, Evaluation | None]:
    """What to score (the model's own output) and the model's recorded evaluator settings; a stage that
    is not installed is a ConfigError saying what to install."""
    if not path.exists():
        raise DataError(f"--{source} {path} does not exist")
    try:
        if source == "checkpoint":
            from train.embedder import load_checkpoint_embedder

            checkpoint = load_checkpoint_embedder(path)
            return checkpoint.embed, checkpoint.evaluation
        from runtime import load_artifact_embedder

        artifact = load_artifact_embedder(path)
        return artifact.embed_output, artifact.evaluation
    except ModuleNotFoundError as exc:
        raise ConfigError(f"--{source} needs {NEEDS[source]}: module {exc.name!r} is not available") from exc


def resolve_embed(
    baseline: str | None, checkpoint: Path | None, artifact: Path | None
) -> tuple[str, Embed, Evaluation | None]:
    """Exactly one source: returns its description, its embed function and its evaluator settings."""
    given = {"baseline": baseline, "checkpoint": checkpoint, "artifact": artifact}
    chosen = [name for name, value in given.items() if value is not None]
    if len(chosen) != 1:
        raise ConfigError("give exactly one of --baseline gei, --checkpoint CKPT or --artifact DIR")
    if baseline is not None:
        return f"baseline:{baseline}", BASELINES[baseline], None
    source, path = ("checkpoint", checkpoint) if checkpoint is not None else ("artifact", artifact)
    assert path is not None  # exactly one source was given
    return f"{source}:{path}", *load_source(source, path)


def evaluation_notes(evaluation: Evaluation | None, protocol: str) -> list[str]:
    """What differs between OpenGait's evaluation of this model and what `gaitlu eval` runs."""
    if evaluation is None:
        return []
    notes = []
    if evaluation.sample_type != "all_ordered":
        notes.append(
            f"the OpenGait config tests with sample_type {evaluation.sample_type!r}; gaitlu evaluates whole "
            "sequences in natural order (all_ordered)"
        )
    if evaluation.cross_view_gallery and protocol in ("casia-b", "oumvlp"):
        notes.append(
            "the OpenGait config sets cross_view_gallery; gaitlu runs the single-view-gallery protocol"
        )
    if evaluation.enable_float16:
        notes.append("OpenGait's evaluator autocasts this model to fp16 on a GPU; gaitlu embeds in fp32")
    return notes


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def cross_view_table(report: CrossViewReport) -> Table:
    """Rows: probe views, then the headline mean and the identical-view (diagonal) mean."""
    names = list(report.conditions)
    views = next(iter(report.conditions.values())).views
    table = Table(title="Rank-1 (%), excluding identical view")
    table.add_column("probe view")
    for name in names:
        table.add_column(name, justify="right")
    for i, view in enumerate(views):
        table.add_row(view, *(_fmt(report.conditions[n].per_view[i]) for n in names))
    table.add_section()
    table.add_row("mean", *(_fmt(report.conditions[n].mean) for n in names), style="bold")
    table.add_row("identical view", *(_fmt(report.conditions[n].diagonal_mean) for n in names))
    return table


def metrics_table(headline: dict[str, float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("%", justify="right")
    for name, value in headline.items():
        table.add_row(name, _fmt(value))
    return table


def print_report(report: Report, console: Console) -> None:
    if isinstance(report, CrossViewReport):
        console.print(cross_view_table(report))
        return
    if isinstance(report, GrewReport):
        if report.local:
            console.print(metrics_table(report.local.headline(), "GREW local (gallery 01, probe 02)"))
        if report.submission:
            console.print(f"GREW submission: {report.num_submitted} probes ranked into {report.submission}")
        return
    title = f"{report.num_probes} probes, {report.num_skipped} skipped (no true match)"
    console.print(metrics_table(report.headline(), title))


@app.command(name="eval")
def eval_command(
    dataset: Annotated[Path, typer.Option(help="Labelled dataset root: <subject>/<condition>/<view>/*.pkl.")],
    protocol: Annotated[ProtocolName, typer.Option(help="Evaluation protocol.")],
    baseline: Annotated[BaselineName | None, typer.Option(help="A parameter-free baseline.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="A training checkpoint (train stage).")] = None,
    artifact: Annotated[Path | None, typer.Option(help="An exported ONNX artifact folder.")] = None,
    partition: Annotated[
        Path | None, typer.Option(help="Partition JSON (default: <dataset>/partition.json).")
    ] = None,
    metric: Annotated[
        MetricName | None,
        typer.Option(
            help="Distance (default: an imported model's OpenGait metric, else cos for gait3d, else euc)."
        ),
    ] = None,
    save_embeddings_to: Annotated[
        Path | None, typer.Option("--save-embeddings", help="Write the test embeddings to this .npz.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only a JSON result on stdout.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per embed call.")] = 8,
    submission: Annotated[
        Path, typer.Option(help="GREW only: where to write the top-20 CSV for unlabelled probes.")
    ] = Path("grew-submission.csv"),
) -> None:
    """Embed the test subjects of DATASET and score them under PROTOCOL."""
    protocol_name = protocol.value
    if not dataset.is_dir():
        raise DataError(f"dataset folder not found: {dataset}")
    split = resolve_partition(dataset, protocol_name, partition)
    check_partition(protocol_name, split)
    sequences = select_test_sequences(dataset, split)  # before loading a model: data errors come first
    source, embed, evaluation = resolve_embed(baseline and baseline.value, checkpoint, artifact)
    max_frames = evaluation.frames_limit if evaluation else MAX_FRAMES
    run = embed_sequences(sequences, embed, batch_size=batch_size, max_frames=max_frames)
    if save_embeddings_to is not None:
        save_embeddings(run.data, save_embeddings_to)
    if metric is not None:
        distance, metric_source = metric.value, "--metric"
    elif evaluation is not None:
        distance, metric_source = evaluation.metric, f"OpenGait: {evaluation.source}"
    else:
        distance, metric_source = DEFAULT_METRIC[protocol_name], f"default for {protocol_name}"
    notes = evaluation_notes(evaluation, protocol_name)
    report = evaluate(
        run.data, protocol_name, distance, split, submission if protocol_name == "grew" else None
    )
    if as_json:
        result = {
            "protocol": protocol_name,
            "metric": distance,
            "metric_source": metric_source,
            "frames_limit": max_frames,
            "evaluation": evaluation.model_dump() if evaluation else None,
            "notes": notes,
            "source": source,
            "dataset": str(dataset),
            "num_sequences": len(run.data),
            "num_skipped": len(run.skipped),
            "skipped": list(run.skipped),
            "embedding_shape": list(run.data.emb.shape[1:]),
            "result": report.to_dict(),
        }
        typer.echo(json.dumps(result, indent=2))
        return
    console = Console()
    counts = f"{len(run.data)} sequences ({len(run.skipped)} skipped)"
    frames = f"first {max_frames} frames" if max_frames else "all frames"
    console.print(f"{protocol_name} | {source} | metric {distance} ({metric_source}) | {frames} | {counts}")
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    print_report(report, console)
    if save_embeddings_to is not None:
        console.print(f"embeddings written to {save_embeddings_to}")
