"""`gaitlu calibrate`: measure what an artifact's scores mean and write it into its manifest.

The labelled set (OpenGait layout, people the model was not trained on) is embedded with the artifact's
runtime and scored exactly as the service scores (gaitlu.evaluation.calibration): every pair of
sequences, and every probe against every enrolled subject. The manifest gets score -> FAR tables and
thresholds at FAR 1e-2, 1e-3 and 1e-4 (`calibration`) and, when it helps on held-out subjects, a
centring step (`indexing.centring`). model.onnx is not touched, so the model hash, and every gallery
bound to it, stay as they were; the manifest is replaced atomically. The service reads it at start.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gaitlu.errors import ConfigError, DataError
from gaitlu.evaluation.calibration import (
    SUPPORTED_COUNT,
    CentringEffect,
    calibrate,
    centring_effect,
    encode_centre,
    reference_centre,
    service_vectors,
)
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.runner import embed_sequences
from gaitlu.files import sha256_file
from gaitlu.labelled import scan_labelled
from gaitlu.manifest import Calibration, Indexing, Manifest, read_manifest, write_manifest

app = typer.Typer(add_completion=False, no_args_is_help=True)


class CentringChoice(StrEnum):
    auto = "auto"  # keep it when it lowers the subject EER on held-out subjects
    on = "on"
    off = "off"


def embed_dataset(artifact: Path, dataset: Path, batch_size: int) -> EmbeddingSet:
    """The labelled set's model output through the artifact's runtime (the service's own embedder)."""
    sequences = scan_labelled(dataset)
    if not sequences:
        raise DataError(
            f"no labelled sequences under {dataset} (expected <subject>/<condition>/<view>/*.pkl)"
        )
    try:
        from runtime import load_artifact_embedder
    except ModuleNotFoundError as exc:
        raise ConfigError(f"calibrating needs the runtime (pip install 'gaitlu[serve]'): {exc.name}") from exc
    embedder = load_artifact_embedder(artifact)
    return embed_sequences(sequences, embedder.embed_output, batch_size=batch_size).data


def calibrated_manifest(
    manifest: Manifest,
    data: EmbeddingSet,
    name: str,
    enrolled_per_subject: int,
    centring: CentringChoice,
    seed: int = 0,
) -> tuple[Manifest, CentringEffect | None]:
    """The manifest with this data set's calibration (and centring, as chosen); what centring did."""
    effect = centring_effect(data, enrolled_per_subject, seed) if centring is CentringChoice.auto else None
    centred = centring is CentringChoice.on or (effect is not None and effect.helps)
    centre = reference_centre(service_vectors(data.emb)) if centred else None
    calibration = calibrate(data, name, enrolled_per_subject, centre, seed)
    indexing = Indexing(centring=None if centre is None else encode_centre(centre, name, len(data)))
    updated = {
        **manifest.model_dump(),
        "indexing": indexing.model_dump(),
        "calibration": calibration.model_dump(),
    }
    return Manifest.model_validate(updated), effect


def _table(calibration: Calibration) -> Table:
    table = Table(title=f"Calibration on '{calibration.dataset}' ({calibration.subjects} subjects)")
    for column in ("comparison", "EER %", "FAR", "threshold", "TAR %", "impostors above"):
        table.add_column(column, justify="left" if column == "comparison" else "right")
    for entry in (calibration.subject, calibration.sequence):
        for t in entry.thresholds:
            above = round(t.observed_far * entry.impostors)
            note = "" if t.supported else " (too few: extrapolated)"
            table.add_row(
                entry.comparison, f"{entry.eer:.2f}", f"{t.far:g}", f"{t.score:.4f}", f"{100 * t.tar:.1f}",
                f"{above}{note}",
            )  # fmt: skip
    return table


@app.command(name="calibrate")
def calibrate_command(
    artifact: Annotated[
        Path, typer.Option(help="Export artifact folder whose manifest gets the calibration.")
    ],
    dataset: Annotated[
        Path,
        typer.Option(help="Labelled people the model was not trained on: <subject>/<condition>/<view>/."),
    ],
    name: Annotated[str | None, typer.Option(help="The data set's name (default: its folder's).")] = None,
    enrolled_per_subject: Annotated[
        int,
        typer.Option(min=1, help="Sequences enrolled per subject for the subject scores (the rest probe)."),
    ] = 4,
    centring: Annotated[
        CentringChoice, typer.Option(help="auto: centre the embeddings when that lowers the EER.")
    ] = CentringChoice.auto,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per embed call.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the enrolled / probe split.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the calibration as JSON.")] = False,
) -> None:
    """Measure genuine and impostor score distributions on DATASET and write score -> FAR tables and
    thresholds at FAR 1e-2, 1e-3 and 1e-4 into ARTIFACT's manifest (the model hash does not change)."""
    manifest = read_manifest(artifact)  # a bad artifact is reported before anything is embedded
    model_file = artifact / manifest.variant("fp32").file
    data = embed_dataset(artifact, dataset, batch_size)
    updated, effect = calibrated_manifest(
        manifest, data, name or dataset.resolve().name, enrolled_per_subject, centring, seed
    )
    write_manifest(updated, artifact)
    if sha256_file(model_file) != manifest.model_sha256 or read_manifest(artifact) != updated:
        raise DataError(f"{artifact} changed while it was being calibrated: run gaitlu calibrate again")
    calibration = updated.calibration
    assert calibration is not None
    if as_json:
        result = {"artifact": str(artifact), "model_hash": manifest.model_sha256, **calibration.model_dump()}
        if effect is not None:
            result["centring_effect"] = {"subject_eer": list(effect.eer), "subject_rank1": list(effect.rank1)}
        typer.echo(json.dumps(result, indent=2))
        return
    console = Console()
    if effect is not None:
        verdict = "kept" if calibration.centred else "not kept"
        console.print(
            f"centring on held-out subjects: EER {effect.eer[0]:.2f} -> {effect.eer[1]:.2f} %, Rank-1 "
            f"{effect.rank1[0]:.1f} -> {effect.rank1[1]:.1f} %: {verdict}"
        )
    console.print(_table(calibration))
    unsupported = [t.far for t in calibration.subject.thresholds if not t.supported]
    if unsupported:
        need = int(SUPPORTED_COUNT / min(unsupported))
        console.print(
            f"[yellow]FAR {', '.join(f'{f:g}' for f in unsupported)}: fewer than {SUPPORTED_COUNT} impostor "
            f"comparisons lie above; a set with {need:,} or more subject comparisons measures them.[/yellow]"
        )
    console.print(
        f"written to {artifact / 'manifest.json'} (model {manifest.model_sha256[:12]}... unchanged)"
    )
