"""`gaitlu demo`: the README main job, composed from the public commands a user would type.

From nothing to a running service: build the embedded default model (a tiny GaitSSB pretrained on a
generated synthetic corpus, exported to ONNX), enrol a demo gallery of synthetic subjects, then serve on
127.0.0.1 with an API key. Everything lands under the data dir; every finished step is skipped on a rerun,
so a warm start is seconds.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gaitlu.errors import GaitluError

app = typer.Typer(add_completion=False)
console = Console(stderr=True)

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO_GALLERY = "demo"


def _gaitlu(title: str, args: list[str]) -> None:
    """Run one `gaitlu` command in-process, as a user would type it."""
    from gaitlu.cli import cli

    console.rule(f"[bold]{title}[/bold]")
    console.print(f"[dim]$ gaitlu {' '.join(args)}[/dim]")
    code = cli.main(args=args, prog_name="gaitlu", standalone_mode=False)
    if isinstance(code, int) and code != 0:  # a command that ended with typer.Exit(code)
        raise GaitluError(f"'gaitlu {args[0]}' failed (exit {code}); the demo stops here")


def _once(marker: Path, title: str, args: list[str]) -> None:
    """Run a step unless its marker says it finished before; the marker is written after success."""
    if marker.exists():
        console.print(f"[dim]- {title}: done before[/dim]")
        return
    _gaitlu(title, args)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def build_default_model(data_dir: Path, config: Path, steps: int, seed: int) -> Path:
    """Synthetic corpus -> shards -> tiny GaitSSB pretraining -> ONNX artifact (cached in data_dir)."""
    artifact = data_dir / "artifact"
    if (artifact / "manifest.json").exists():
        console.print(f"[dim]- default model: cached at {artifact}[/dim]")
        return artifact
    build = data_dir / "build"
    done = build / ".done"
    corpus, shards, run = build / "corpus", build / "shards", build / "pretrain"
    _once(
        done / "corpus",
        "Synthetic unlabelled corpus (GaitLU-1M layout)",
        [
            "synth",
            "--out",
            str(corpus),
            "--subjects",
            "200",
            "--sequences-per-subject",
            "4",
            "--seed",
            str(seed),
            "--layout",
            "gaitlu",
            "--workers",
            "2",
        ],
    )
    _once(
        done / "shards",
        "Pack into shards",
        ["data", "pack", str(corpus / "silhouette_cut_pkl"), "--out", str(shards)],
    )
    _gaitlu("Verify shards", ["data", "verify", str(shards)])
    resume = ["--resume-if-exists"]  # continue a crashed run; checkpoints/ may hold only a temp file
    _once(
        done / "pretrain",
        "Self-supervised pretraining (tiny GaitSSB, CPU)",
        [
            "train",
            "pretrain",
            "--config",
            str(config),
            "--data",
            str(shards),
            "--out",
            str(run),
            "--max-steps",
            str(steps),
            "--device",
            "cpu",
            *resume,
        ],
    )
    from train.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise typer.BadParameter(f"pretraining left no checkpoint in {run}")
    _gaitlu("Export to ONNX", ["export", str(checkpoint), "--out", str(artifact)])
    return artifact


CALIBRATION_SUBJECTS, CALIBRATION_WALKS = 75, 12  # >= 10,000 subject comparisons: FAR 1e-3 is measured


def calibrate_default_model(data_dir: Path, artifact: Path, seed: int) -> None:
    """`gaitlu calibrate` on synthetic people held out from training and from the demo gallery, so the demo's
    scores come with false accept rates (the demo gallery enrols 10 walks per subject, as calibrated)."""
    from gaitlu.manifest import read_manifest

    if read_manifest(artifact).calibration is not None:
        console.print("[dim]- calibration: done before[/dim]")
        return
    held_out = data_dir / "build" / "calibration-set"
    heldout_seed = seed + 1000  # other people than the corpus's and the gallery's
    _once(
        data_dir / "build" / ".done" / "calibration-set",
        "Held-out synthetic people for calibration",
        ["synth", "--out", str(held_out), "--subjects", str(CALIBRATION_SUBJECTS), "--sequences-per-subject",
         str(CALIBRATION_WALKS), "--seed", str(heldout_seed), "--layout", "opengait", "--workers", "2"],
    )  # fmt: skip
    _gaitlu(
        "Calibrate the scores (score -> FAR)",
        ["calibrate", "--artifact", str(artifact), "--dataset", str(held_out), "--enrolled-per-subject", "10",
         "--name", f"synthetic held-out people (seed {heldout_seed})"],
    )  # fmt: skip


def enroll_demo_gallery(data_dir: Path, artifact: Path, subjects: int, seed: int) -> Path:
    """Enrol a labelled synthetic set offline as gallery 'demo'; return a probe: a new walk of subject 3."""
    demo = data_dir / "demo"
    labelled = demo / "gallery-set"
    _once(
        demo / ".done" / "gallery-set",
        "Synthetic demo subjects (CASIA-B layout)",
        [
            "synth",
            "--out",
            str(labelled),
            "--subjects",
            str(subjects),
            "--sequences-per-subject",
            "10",
            "--seed",
            str(seed),
            "--layout",
            "opengait",
        ],
    )
    _once(
        demo / ".done" / "enrolled",
        f"Enrol gallery '{DEMO_GALLERY}' (offline, same store as the server)",
        [
            "enroll",
            str(labelled),
            "--gallery",
            DEMO_GALLERY,
            "--create",
            "--offline",
            "--data-dir",
            str(data_dir / "service"),
            "--artifact",
            str(artifact),
        ],
    )
    probe = demo / "probe-003.pkl"
    if not probe.exists():
        import numpy as np

        from gaitlu.sequence import save_sequence
        from synth import identity_for, render_sequence

        walk = render_sequence(identity_for(seed, 3), 54.0, "nm", 80, np.random.default_rng(seed + 12345))
        save_sequence(walk, probe)
    return probe


def _api_key(data_dir: Path) -> str:
    """The demo's API key: made once, kept (owner-readable only) so reruns print the same one."""
    path = data_dir / "api-key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its model, gallery and data.")] = Path(
        ".data"
    ),
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    config: Annotated[Path, typer.Option(help="Pretraining config of the default model.")] = REPO_CONFIGS
    / "gaitssb_tiny.yaml",
    steps: Annotated[int, typer.Option(help="Pretraining steps of the default model.")] = 200,
    subjects: Annotated[int, typer.Option(help="Subjects in the demo gallery.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 0,
    serve: Annotated[bool, typer.Option(help="Start the server at the end.")] = True,
) -> None:
    """Build the default model and a demo gallery (cached under --data-dir), then serve them."""
    data_dir = data_dir.resolve()
    artifact = build_default_model(data_dir, config, steps, seed)
    calibrate_default_model(data_dir, artifact, seed)
    probe = enroll_demo_gallery(data_dir, artifact, subjects, seed)
    key = _api_key(data_dir)
    url = f"http://{host}:{port}"
    console.rule("[bold green]gaitlu is ready[/bold green]")
    console.print(f"Web page:  {url}/   (API docs: {url}/docs)")
    console.print(f"API key:   {key}   (kept in {data_dir / 'api-key'})")
    console.print(f"Gallery:   '{DEMO_GALLERY}' ({subjects} synthetic subjects)")
    console.print("Search with a new walk of subject 003:")
    console.print(
        f"  curl -s -H 'X-API-Key: {key}' -F gallery={DEMO_GALLERY} -F k=5 -F max_far=0.001 "
        f"-F files=@{probe} {url}/search",
        soft_wrap=True,
    )
    if serve:
        os.environ["GAITLU_API_KEYS"] = key
        _gaitlu(
            "Serve",
            [
                "serve",
                "--artifact",
                str(artifact),
                "--data-dir",
                str(data_dir / "service"),
                "--host",
                host,
                "--port",
                str(port),
            ],
        )
