"""`gaitlu video silhouettes`: a walking-person video -> OpenGait-style silhouette sequence file(s)."""

from __future__ import annotations

import dataclasses
import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from gaitlu.errors import ConfigError
from gaitlu.sequence import save_sequence
from video.decode import VideoLimits
from video.errors import NothingToEmbedError
from video.extract import ExtractConfig, ExtractionResult, Track, extract_tracks
from video.quality import QualityConfig

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Silhouettes from walking-person videos.")

SEQUENCE_SUFFIXES = (".pkl", ".npy")
SIDECAR = "tracks.json"


class Method(StrEnum):
    bgsub = "bgsub"
    onnx = "onnx"


@app.callback()
def _setup() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _track_file(out_dir: Path, track: Track) -> Path:
    return out_dir / f"track-{track.track_id:03d}.pkl"


def _write(result: ExtractionResult, out: Path, all_tracks: bool) -> dict[int, Path]:
    """Write the chosen (or every accepted) track; a folder also gets tracks.json. Returns id -> file."""
    if out.suffix.lower() in SEQUENCE_SUFFIXES:
        if all_tracks:
            raise ConfigError("--all-tracks writes one file per track: give --out a folder, not a file")
        return {result.best.track_id: save_sequence(result.best.sequence, out)}
    chosen = result.accepted if all_tracks else [result.best]
    written = {t.track_id: save_sequence(t.sequence, _track_file(out, t)) for t in chosen}
    sidecar = {
        **result.report(),
        "tracks": [
            {**t.sidecar(), "file": written[t.track_id].name if t.track_id in written else None}
            for t in result.tracks
        ],
    }
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=1))
    return written


@app.command("silhouettes")
def silhouettes(
    video: Annotated[Path, typer.Argument(help="The video: MP4/MOV, AVI or MKV/WebM.")],
    out: Annotated[
        Path, typer.Option("--out", help="A .pkl/.npy file (the chosen track) or a folder (track-NNN.pkl).")
    ],
    method: Annotated[
        Method, typer.Option("--method", help="bgsub: fixed camera; onnx: a person-segmentation model.")
    ] = Method.bgsub,
    model: Annotated[Path | None, typer.Option("--model", help="SEG.onnx for --method onnx.")] = None,
    all_tracks: Annotated[
        bool, typer.Option("--all-tracks", help="Write every usable person (folder --out), not just one.")
    ] = False,
    background: Annotated[
        Path | None, typer.Option("--background", help="An image of the empty scene (bgsub).")
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="Refuse videos with more frames than this.")
    ] = None,
    min_frames: Annotated[
        int, typer.Option("--min-frames", min=1, help="Fewest silhouettes a usable track has.")
    ] = QualityConfig.min_frames,
    as_json: Annotated[bool, typer.Option("--json", help="Print the extraction report as JSON.")] = False,
) -> None:
    """Extract the walking person's silhouettes from a video as an aligned 64x64 sequence."""
    limits = VideoLimits() if max_frames is None else VideoLimits(max_frames=max_frames)
    config = ExtractConfig(quality=dataclasses.replace(QualityConfig(), min_frames=min_frames))
    try:
        result = extract_tracks(
            video, method=method.value, model=model, background=background, limits=limits, config=config
        )
    except NothingToEmbedError as exc:
        if as_json and exc.result is not None:
            typer.echo(json.dumps({**exc.result.report(), "error": str(exc)}, indent=1))
        raise
    written = _write(result, out, all_tracks)
    if as_json:
        report = result.report()
        for track in report["tracks"]:
            track["file"] = str(written[track["id"]]) if track["id"] in written else None
        typer.echo(json.dumps(report, indent=1))
        return
    for track in result.tracks:
        q = track.quality
        target = written.get(track.track_id)
        verdict = (
            f"-> {target}" if target else ("usable, not written" if q.accepted else "; ".join(q.problems))
        )
        typer.echo(
            f"track {track.track_id}: frames {track.frame_range[0]}-{track.frame_range[1] - 1}, "
            f"{q.frames_kept} silhouettes, {q.completeness:.0%} complete, "
            f"{q.border_cut_fraction:.0%} cut by the border {verdict}"
        )
