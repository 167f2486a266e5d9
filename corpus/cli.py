"""`gaitlu data ...`: index, pack and verify a GaitLU-1M style corpus (docs/data.md)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from corpus.checks import DEFAULT_MIN_FRAMES
from corpus.codec import CODECS, DEFAULT_CODEC
from corpus.pack import DEFAULT_SHARD_SIZE

data_app = typer.Typer(no_args_is_help=True, add_completion=False, help="GaitLU-1M corpus tools.")

_DEFAULT_WORKERS = os.cpu_count() or 1
_SHOWN_BAD = 20  # bad files listed one per line; the rest are counted (all of them are in the manifest)

Workers = Annotated[int, typer.Option("--workers", "-j", min=1, help="Processes reading files.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")]


@data_app.callback()
def _setup() -> None:
    """GaitLU-1M corpus tools: index, pack into shards, verify."""


def _echo_bad(bad: list[dict[str, Any]]) -> None:
    for record in bad[:_SHOWN_BAD]:
        typer.echo(f"  {record['status']:<10} {record['path']}: {record.get('reason', '')}")
    if len(bad) > _SHOWN_BAD:
        typer.echo(f"  ... and {len(bad) - _SHOWN_BAD} more")


@data_app.command("index")
def index_cmd(
    root: Annotated[Path, typer.Argument(help="The silhouette_cut_pkl tree (or the folder holding it).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest to write or resume (JSON lines).")],
    workers: Workers = _DEFAULT_WORKERS,
    min_frames: Annotated[
        int, typer.Option(min=1, help="Shorter sequences are reported.")
    ] = DEFAULT_MIN_FRAMES,
    progress: Progress = True,
) -> None:
    """Read every .pkl once and record id, frames and frame size; bad files are reported, not fatal."""
    from corpus.index import index_tree

    summary = index_tree(root, out, workers=workers, min_frames=min_frames, progress=progress)
    counts = ", ".join(f"{status} {n}" for status, n in sorted(summary.counts.items()))
    typer.echo(f"{summary.manifest}: {summary.files} files ({summary.new} read now): {counts}")
    typer.echo(f"usable: {summary.counts['ok']} sequences, {summary.frames} frames")
    if summary.bad:
        typer.echo(f"{len(summary.bad)} files are not usable:")
        _echo_bad(summary.bad)


@data_app.command("pack")
def pack_cmd(
    root: Annotated[Path, typer.Argument(help="The silhouette_cut_pkl tree (or the folder holding it).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the shards and index.json.")],
    shard_size: Annotated[int, typer.Option(min=1, help="Sequences per shard.")] = DEFAULT_SHARD_SIZE,
    workers: Workers = _DEFAULT_WORKERS,
    manifest: Annotated[
        Path | None, typer.Option(help="Pack the 'ok' files of this manifest instead of walking the tree.")
    ] = None,
    codec: Annotated[
        str, typer.Option(help=f"{' or '.join(CODECS)}: zlib is ~3x smaller again, slower to read.")
    ] = DEFAULT_CODEC,
    progress: Progress = True,
) -> None:
    """Pack the corpus into bit-packed shards (resumable: finished shards are kept)."""
    from corpus.pack import pack_corpus

    s = pack_corpus(
        root,
        out,
        shard_size=shard_size,
        workers=workers,
        manifest=manifest,
        codec_name=codec,
        progress=progress,
    )
    typer.echo(
        f"{s.out}: {s.shards} shards ({s.packed_shards} packed now), "
        f"{s.sequences} sequences, {s.frames} frames"
    )
    typer.echo(
        f"size: {s.bytes / 1e6:.1f} MB in shards vs {s.source_disk_bytes / 1e6:.1f} MB of pickles on disk "
        f"({s.source_bytes / 1e6:.1f} MB apparent): {s.size_ratio:.1f}x smaller"
    )
    typer.echo(
        f"grey pixels thresholded at 128: {s.nonbinary_pixels} ({s.nonbinary_fraction:.2e} of all pixels) "
        f"in {s.nonbinary_sequences} sequences"
    )
    if s.skipped:
        counts = Counter(r["status"] for r in s.skipped)
        by_status = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        typer.echo(f"{len(s.skipped)} files not packed ({by_status}):")
        _echo_bad(s.skipped)


@data_app.command("verify")
def verify_cmd(
    shards: Annotated[Path, typer.Argument(help="Shard folder written by `gaitlu data pack`.")],
    progress: Progress = True,
) -> None:
    """Check every shard's size, checksum and records against index.json; exit 1 if anything is wrong."""
    from corpus.verify import verify_shards

    report = verify_shards(shards, progress=progress)
    for problem in report.problems:
        typer.echo(f"BAD {problem.describe()}", err=True)
    if report.ok:
        typer.echo(f"{shards}: all {report.shards} shards and {report.sequences} sequences verified")
        return
    typer.echo(
        f"{shards}: {len(report.problems)} of {report.shards} shards damaged, "
        f"{report.affected_sequences} of {report.sequences} sequences affected",
        err=True,
    )
    raise typer.Exit(1)
