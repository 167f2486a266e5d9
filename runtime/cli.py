"""`gaitlu parity ARTIFACT --sequences DIR`: measure backends against fp32 onnxruntime into the manifest.

Exit 0 when every pair measured passed, 1 when one failed (it is recorded all the same, so the runtime
refuses it and `auto` skips it), 2 on a usage or data error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gaitlu.errors import ConfigError
from runtime.parity import DEFAULT_LIMIT, record_parity
from runtime.selection import PARITY_GATED, PARITY_THRESHOLD

app = typer.Typer(add_completion=False)


@app.command("parity")
def parity_command(
    artifact: Annotated[Path, typer.Argument(help="Export artifact folder (`gaitlu export`).")],
    sequences: Annotated[
        Path,
        typer.Option(
            "--sequences",
            help="Folder of real silhouette sequences (e.g. the CASIA-B dev set's OpenGait tree).",
        ),
    ],
    backend: Annotated[str, typer.Option(help=f"Backend to check: {', '.join(PARITY_GATED)}.")] = "openvino",
    precision: Annotated[
        list[str] | None,
        typer.Option(
            "--precision",
            help="Precision to check; repeat for several (default: fp32, bf16 where the CPU has it, "
            "int8 where the artifact has it).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="Sequences, spread evenly over the folder.")
    ] = DEFAULT_LIMIT,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads (default: all).")] = None,
    threshold: Annotated[
        float, typer.Option(help="Min per-sequence cosine to pass (may be raised only).")
    ] = PARITY_THRESHOLD,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="casia-b: SEQUENCES is a labelled OpenGait tree (e.g. dev subjects 051-074); every "
            "sequence is embedded and each condition's cross-view Rank-1 may move <= 0.3 points."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """Embed sequences with fp32 onnxruntime (the reference) and with BACKEND at each precision; record
    each pair's worst per-sequence cosine in ARTIFACT's manifest (`backend_parity`). The runtime serves a
    pair only while its record passes (cosine >= 0.9999)."""
    if backend not in PARITY_GATED:
        raise ConfigError(f"--backend must be one of {list(PARITY_GATED)}, not {backend!r}")
    pairs = [(backend, p) for p in precision] if precision else None
    records = record_parity(artifact, sequences, pairs, limit, threads, threshold, protocol)
    if as_json:
        typer.echo(json.dumps({key: r.model_dump() for key, r in records.items()}, indent=2))
    else:
        for key, r in records.items():
            result = "passed" if r.passed else f"FAILED (needs >= {r.threshold})"
            rank1 = ""
            if r.rank1 is not None and r.rank1_reference is not None:
                rank1 = ", Rank-1 " + ", ".join(
                    f"{c} {r.rank1_reference[c]:.2f} -> {r.rank1[c]:.2f}" for c in r.rank1
                )
            typer.echo(
                f"{key}: min cosine {r.min_cosine:.7f}, mean {r.mean_cosine:.7f}, worst part "
                f"{r.min_part_cosine:.6f}{rank1} on {r.data}: {result} [{r.device}]"
            )
    if not all(r.passed for r in records.values()):
        raise typer.Exit(1)
