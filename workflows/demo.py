"""`gaitlu demo`: the README main job, composed from the public commands a user would type.

From nothing to a running service: take the default model (models/default: a tiny GaitSSB trained only
on synthetic walkers, committed as an ONNX artifact by `make default-model`; built from scratch by the
same commands where it is missing), enrol a demo gallery of synthetic subjects, then serve on 127.0.0.1
with an API key. Everything else lands under the data dir; every finished step is skipped on a rerun,
so a warm start is seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gaitlu.errors import GaitluError
from gaitlu.files import sha256_file
from gaitlu.manifest import MANIFEST_NAME, ArtifactError, read_manifest, verified_path

app = typer.Typer(add_completion=False)
console = Console(stderr=True)

REPO = Path(__file__).resolve().parents[1]
REPO_CONFIGS = REPO / "configs"
DEFAULT_MODEL = REPO / "models" / "default"
CHECKPOINT_FILE = "checkpoint.pt"  # the default model's weights, to fine-tune from
BUILD_RECORD = "build.json"
MAX_DEFAULT_MODEL_BYTES = 25 * 2**20  # what issue 11 allows the repository to carry
DEMO_GALLERY = "demo"
GALLERY_WALKS = 10  # walks enrolled per demo subject, and per subject when the scores are calibrated


def _gaitlu(title: str, args: list[str]) -> None:
    """Run one `gaitlu` command in-process, as a user would type it."""
    from gaitlu.cli import cli

    console.rule(f"[bold]{title}[/bold]")
    console.print(f"[dim]$ gaitlu {' '.join(args)}[/dim]")
    code = cli.main(args=args, prog_name="gaitlu", standalone_mode=False)
    if isinstance(code, int) and code != 0:  # a command that ended with typer.Exit(code)
        raise GaitluError(f"'gaitlu {args[0]}' failed (exit {code}); the demo stops here")


def _once(marker: Path, title: str, args: list[str]) -> float:
    """Run a step unless its marker says it finished before; the marker, written after success, holds
    the step's wall time in seconds, which is returned (also when the step was done before)."""
    if marker.exists():
        console.print(f"[dim]- {title}: done before[/dim]")
        return float(marker.read_text() or 0)
    start = time.perf_counter()
    _gaitlu(title, args)
    elapsed = time.perf_counter() - start
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{elapsed:.1f}")
    return elapsed


def _shown(path: Path) -> str:
    """A config path as build.json records it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _args(*parts: object) -> list[str]:
    return [str(p) for p in parts]


@dataclass(frozen=True)
class Recipe:
    """How the default model is built from nothing (docs/realism-log.md says why each number)."""

    seed: int = 99  # the unlabelled corpus; the labelled identities use seed + 1
    ssl_identities: int = 200  # unlabelled synthetic people, 4 walks each
    ssl_config: Path = REPO_CONFIGS / "gaitssb_tiny.yaml"
    ssl_steps: int = 100  # pretraining steps (BatchNorm statistics and a start)
    identities: int = 1500  # labelled synthetic people (60 % train the supervised stage)
    walks: int = 16  # walks per labelled person, each at a random CASIA-B view and condition
    supervised_config: Path = REPO_CONFIGS / "default_supervised.yaml"
    supervised_steps: int = 1000
    calibration_seed: int = 1000  # held-out people: neither the training sets' nor the demo gallery's
    calibration_identities: int = 75  # x 12 walks: >= 10,000 subject comparisons, FAR 1e-3 is measured
    calibration_walks: int = 12

    def key(self) -> str:
        """Names the recipe's build folder: a changed recipe (a number or a config file's content) never
        resumes another recipe's stages."""
        values = {
            k: sha256_file(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()
        }
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def build_default_model(model_dir: Path, builds: Path, recipe: Recipe) -> Path:
    """Synthetic data only -> SSL pretraining -> supervised training on synthetic identities -> ONNX.

    Every stage is a `gaitlu` command, cached under `builds/<recipe key>` (a rerun of the same recipe
    resumes where it stopped); the result is published to `model_dir`: the artifact, the weights-only
    checkpoint (to fine-tune from) and build.json (the recipe, its commands and their wall times).
    """
    build = builds / recipe.key()
    done = build / ".done"
    corpus, shards, pretrain = build / "corpus", build / "shards", build / "pretrain"
    labelled, supervised = build / "labelled", build / "supervised"
    clock: dict[str, float] = {}
    commands: dict[str, list[str]] = {
        "corpus": _args("synth", "--out", corpus, "--subjects", recipe.ssl_identities)
        + _args("--sequences-per-subject", 4, "--seed", recipe.seed, "--layout", "gaitlu", "--workers", 2),
        "shards": _args("data", "pack", corpus / "silhouette_cut_pkl", "--out", shards),
        "pretrain": _args("train", "pretrain", "--config", recipe.ssl_config, "--data", shards, "--out")
        + _args(pretrain, "--max-steps", recipe.ssl_steps, "--device", "cpu", "--resume-if-exists"),
        "labelled": _args("synth", "--out", labelled, "--subjects", recipe.identities)
        + _args("--sequences-per-subject", recipe.walks, "--seed", recipe.seed + 1, "--layout", "opengait")
        + _args("--workers", 2),
    }
    titles = {
        "corpus": "Synthetic unlabelled corpus (GaitLU-1M layout)",
        "shards": "Pack into shards",
        "pretrain": "Self-supervised pretraining (tiny GaitSSB, CPU)",
        "labelled": "Synthetic labelled identities (CASIA-B layout)",
    }
    for stage, args in commands.items():
        clock[stage] = _once(done / stage, titles[stage], args)
        if stage == "shards":
            _gaitlu("Verify shards", ["data", "verify", str(shards)])

    from train.checkpoint import atomic_save, latest_checkpoint, read_checkpoint

    pretrained = latest_checkpoint(pretrain)
    if pretrained is None:
        raise GaitluError(f"pretraining left no checkpoint in {pretrain}")
    commands["supervised"] = (
        _args(
            "train",
            "finetune",
            "--config",
            recipe.supervised_config,
            "--init",
            pretrained,
            "--dataset",
            labelled,
        )
        + _args("--partition", labelled / "partition.json", "--out", supervised, "--max-steps")
        + _args(recipe.supervised_steps, "--device", "cpu", "--resume-if-exists")
    )
    clock["supervised"] = _once(
        done / "supervised",
        "Supervised training on synthetic identities (triplet, CPU)",
        commands["supervised"],
    )
    final = latest_checkpoint(supervised)
    if final is None:
        raise GaitluError(f"supervised training left no checkpoint in {supervised}")

    staging = build / "publish"
    shutil.rmtree(staging, ignore_errors=True)
    commands["export"] = ["export", str(final), "--out", str(staging)]
    start = time.perf_counter()
    _gaitlu("Export to ONNX", commands["export"])
    clock["export"] = time.perf_counter() - start
    start = time.perf_counter()
    commands["calibrate"] = calibrate_default_model(staging, builds, recipe) or []
    clock["calibrate"] = time.perf_counter() - start
    weights = read_checkpoint(final)
    slim = {**weights, "optimizer": None, "scheduler": None, "scaler": None}  # weights only: 4x smaller
    atomic_save(slim, staging / CHECKPOINT_FILE)
    record = {
        "recipe": {k: _shown(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(recipe).items()},
        "commands": {k: "gaitlu " + " ".join(v) for k, v in commands.items()},
        "wall_s": {k: round(v, 1) for k, v in clock.items()},
        "checkpoint_sha256": sha256_file(staging / CHECKPOINT_FILE),
        "note": "trained only on synthetic walkers (gaitlu synth); no real silhouette was used",
    }
    (staging / BUILD_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    check_default_model(staging)
    publish(staging, model_dir)
    return model_dir


def calibrate_default_model(artifact: Path, builds: Path, recipe: Recipe) -> list[str] | None:
    """`gaitlu calibrate` on synthetic people held out from training and from the demo gallery, so the
    model's scores come with false accept rates (GALLERY_WALKS enrolled per subject, as in the demo
    gallery). Returns the calibrate command; None when the artifact was calibrated before."""
    if read_manifest(artifact).calibration is not None:
        console.print("[dim]- calibration: done before[/dim]")
        return None
    build = builds / recipe.key()
    held_out, seed = build / "calibration-set", recipe.calibration_seed
    _once(
        build / ".done" / "calibration-set",
        "Held-out synthetic people for calibration",
        _args(
            "synth", "--out", held_out, "--subjects", recipe.calibration_identities, "--sequences-per-subject"
        )
        + _args(recipe.calibration_walks, "--seed", seed, "--layout", "opengait", "--workers", 2),
    )
    command = _args("calibrate", "--artifact", artifact, "--dataset", held_out, "--enrolled-per-subject")
    command += _args(GALLERY_WALKS, "--name", f"synthetic held-out people (seed {seed})")
    _gaitlu("Calibrate the scores (score -> FAR)", command)
    return command


def check_default_model(model_dir: Path) -> None:
    """Every file the manifest and build.json list is there with its recorded size and sha256, and the
    folder fits the repository's budget; otherwise ArtifactError saying which file is wrong."""
    manifest = read_manifest(model_dir)
    for variant in manifest.variants.values():
        path = verified_path(model_dir, variant.file, variant.sha256)
        if path.stat().st_size != variant.bytes:
            raise ArtifactError(f"{path} has {path.stat().st_size} bytes; its manifest says {variant.bytes}")
    record = model_dir / BUILD_RECORD
    try:
        checkpoint_sha256 = json.loads(record.read_text())["checkpoint_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{record}: missing or not a build record ({exc})") from None
    verified_path(model_dir, CHECKPOINT_FILE, checkpoint_sha256)
    size = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())
    if size > MAX_DEFAULT_MODEL_BYTES:
        raise ArtifactError(
            f"{model_dir} holds {size / 2**20:.1f} MiB; a committed default model is at most 25 MiB"
        )


def publish(staging: Path, model_dir: Path) -> None:
    """Move the finished folder into place by renames: never a half-copied default model."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    incoming, old = (model_dir.with_name(f".{model_dir.name}.{tag}") for tag in ("new", "old"))
    for stale in (incoming, old):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.copytree(staging, incoming)
    if model_dir.exists():
        os.replace(model_dir, old)
    os.replace(incoming, model_dir)
    shutil.rmtree(old, ignore_errors=True)


def default_model(model_dir: Path, builds: Path, recipe: Recipe, rebuild: bool) -> Path:
    """The committed default model when it is there (checked against its hashes, then served at once),
    else built from scratch."""
    if (model_dir / MANIFEST_NAME).exists() and not rebuild:
        try:
            check_default_model(model_dir)
        except ArtifactError as exc:
            raise GaitluError(
                f"the default model is damaged: {exc}. Restore it (`git checkout -- {model_dir}`) or "
                "rebuild it (`make default-model`)"
            ) from None
        console.print(f"[dim]- default model: {model_dir} (built by `make default-model`)[/dim]")
        return model_dir
    console.print(
        f"[yellow]Building the default model from scratch into {model_dir}: hours on 2 CPU cores "
        f"(stages cached under {builds / recipe.key()}; models/default/build.json holds measured "
        "stage times).[/yellow]"
    )
    return build_default_model(model_dir, builds, recipe)


def enroll_demo_gallery(data_dir: Path, artifact: Path, service_dir: Path, subjects: int, seed: int) -> Path:
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
            str(GALLERY_WALKS),
            "--seed",
            str(seed),
            "--layout",
            "opengait",
        ],
    )
    _once(
        service_dir / ".demo-enrolled",
        f"Enrol gallery '{DEMO_GALLERY}' (offline, same store as the server)",
        [
            "enroll",
            str(labelled),
            "--gallery",
            DEMO_GALLERY,
            "--create",
            "--offline",
            "--data-dir",
            str(service_dir),
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
    page_walkers(service_dir, subjects, seed)
    return probe


PAGE_ENROLLED = ("003", "011", "027")  # enrolled subjects the web page offers new walks of ...
PAGE_STRANGERS = 2  # ... and people the gallery has never seen


def page_walkers(service_dir: Path, subjects: int, seed: int) -> list[Path]:
    """The web page's demo walkers (the server's DATA_DIR/demo, service/demo.py): new walks of enrolled
    subjects, `enrolled-<id>.pkl` (a search should name them), and of strangers, `stranger-<n>.pkl` (it
    should answer "no match"). Written once; with these present the server renders none of its own,
    all of whom would be strangers to the demo gallery."""
    import numpy as np

    from gaitlu.preprocess import to_model_frames
    from gaitlu.sequence import save_sequence
    from service.demo import demo_folder
    from synth import identity_for, render_sequence

    folder = demo_folder(service_dir)
    people = [(f"enrolled-{s}", int(s)) for s in PAGE_ENROLLED if int(s) <= subjects]
    people += [(f"stranger-{n}", subjects + 1000 + n) for n in range(1, PAGE_STRANGERS + 1)]
    written = []
    for name, person in people:
        path = folder / f"{name}.pkl"
        if not path.exists():
            rng = np.random.default_rng(seed + 23456 + person)  # not a walk the gallery holds
            walk = render_sequence(identity_for(seed, person), 54.0, "nm", 60, rng)
            save_sequence(to_model_frames(walk), path)  # (T, 64, 44): small downloads for the page
        written.append(path)
    return written


def page_url(host: str, port: int, key: str) -> str:
    """The web page's address with the API key handed over in its fragment (never sent to the server;
    the page stores the key and removes it from the address bar), like a notebook server's token URL."""
    return f"http://{host}:{port}/#key={key}"


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
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its gallery, data and builds.")] = Path(
        ".data"
    ),
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    model_dir: Annotated[Path, typer.Option(help="The default model's artifact folder.")] = DEFAULT_MODEL,
    rebuild: Annotated[
        bool, typer.Option(help="Build the default model from scratch even if model-dir holds one.")
    ] = False,
    config: Annotated[
        Path, typer.Option(help="Self-supervised pretraining config of a build.")
    ] = Recipe.ssl_config,
    steps: Annotated[
        int, typer.Option(help="Self-supervised pretraining steps of a build.")
    ] = Recipe.ssl_steps,
    supervised_steps: Annotated[
        int, typer.Option(help="Supervised steps (synthetic identities) of a build.")
    ] = Recipe.supervised_steps,
    subjects: Annotated[int, typer.Option(help="Subjects in the demo gallery.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the demo gallery's synthetic people.")] = 0,
    serve: Annotated[bool, typer.Option(help="Start the server at the end.")] = True,
) -> None:
    """Take (or build) the default model, enrol a demo gallery (cached under --data-dir), then serve."""
    data_dir = data_dir.resolve()
    recipe = Recipe(ssl_config=config.resolve(), ssl_steps=steps, supervised_steps=supervised_steps)
    builds = data_dir / "default-model"
    artifact = default_model(model_dir.resolve(), builds, recipe, rebuild)
    if not serve and rebuild:
        return  # `make default-model`: the model is built, calibrated and published, nothing to demo
    if calibrate_default_model(artifact, builds, recipe) is not None:  # a model from before calibration
        console.print(f"[yellow]{artifact / MANIFEST_NAME} now holds its calibration: keep it.[/yellow]")
    # One service folder per model: a gallery is only searchable with the model that enrolled it.
    service_dir = data_dir / "service" / read_manifest(artifact).model_sha256[:12]
    probe = enroll_demo_gallery(data_dir, artifact, service_dir, subjects, seed)
    key = _api_key(data_dir)
    url = f"http://{host}:{port}"
    console.rule("[bold green]gaitlu is ready[/bold green]")
    console.print(f"Web page:  {page_url(host, port, key)}")
    console.print("           (hands the page the API key; the demo walkers enrolled-* are in the gallery,")
    console.print(f"            stranger-* are not)   API docs: {url}/docs")
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
                str(service_dir),
                "--host",
                host,
                "--port",
                str(port),
            ],
        )
