"""The two shipped models, each built from nothing by the project's own commands and committed.

- models/default: models/synthetic's tiny GaitSSB trained further on real people, the CASIA-B
  development set (subjects 001-074, as OpenGait's CASIA-B models are), with the capture shifts of
  train/shifts.py (configs/casiab_default.yaml; MODEL_CARD.md there states CASIA-B's terms, which the
  weights carry). `make default-model` rebuilds it; it needs the dev set, which never enters the
  repository.
- models/synthetic: a tiny GaitSSB trained only on synthetic walkers (gaitlu synth): SSL pretraining,
  then triplet training on synthetic identities. Free of third-party data terms; `make synthetic-model`.

Every stage is a `gaitlu` command run in-process as a user would type it, cached under
`builds/<name>-<recipe key>` (a rerun of the same recipe resumes where it stopped). The result is
published whole into the model folder: the ONNX artifact (calibrated on synthetic people neither model
saw), a weights-only checkpoint (to fine-tune from) and build.json (the recipe, its commands and their
wall times). A folder that does not match its recorded hashes is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from gaitlu.errors import GaitluError
from gaitlu.files import sha256_file, write_atomic
from gaitlu.manifest import MANIFEST_NAME, ArtifactError, read_manifest, verified_path

console = Console(stderr=True)

REPO = Path(__file__).resolve().parents[1]
REPO_CONFIGS = REPO / "configs"
MODELS = {"default": REPO / "models" / "default", "synthetic": REPO / "models" / "synthetic"}
DEFAULT_MODEL = MODELS["default"]
CHECKPOINT_FILE = "checkpoint.pt"  # the model's weights, to fine-tune from
BUILD_RECORD = "build.json"
MODEL_CARD = "MODEL_CARD.md"  # written by people, kept across rebuilds
MAX_MODEL_BYTES = 25 * 2**20  # what a committed model may weigh in the repository
GALLERY_WALKS = 10  # walks enrolled per demo subject, and per subject when the scores are calibrated
# The packed CASIA-B development set beside the repository (its README says how it is laid out).
CASIAB_DEV_SOURCE = REPO.parent / "shared" / "data" / "casiab-dev"


def gaitlu(title: str, args: list[str]) -> None:
    """Run one `gaitlu` command in-process, as a user would type it."""
    from gaitlu.cli import cli

    console.rule(f"[bold]{title}[/bold]")
    console.print(f"[dim]$ gaitlu {' '.join(args)}[/dim]")
    code = cli.main(args=args, prog_name="gaitlu", standalone_mode=False)
    if isinstance(code, int) and code != 0:  # a command that ended with typer.Exit(code)
        raise GaitluError(f"'gaitlu {args[0]}' failed (exit {code}); the build stops here")


def once(marker: Path, title: str, args: list[str]) -> float:
    """Run a step unless its marker says it finished before; the marker, written after success, holds
    the step's wall time in seconds, which is returned (also when the step was done before)."""
    if marker.exists():
        console.print(f"[dim]- {title}: done before[/dim]")
        return float(marker.read_text() or 0)
    start = time.perf_counter()
    gaitlu(title, args)
    elapsed = time.perf_counter() - start
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, f"{elapsed:.1f}")
    return elapsed


def shown(path: Path) -> str:
    """A path as build.json records it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def args_of(*parts: object) -> list[str]:
    return [str(p) for p in parts]


def recipe_key(recipe: object) -> str:
    """Names a recipe's build folder: a changed number or config file content never resumes another
    recipe's stages."""
    assert dataclasses.is_dataclass(recipe) and not isinstance(recipe, type)
    values = {k: sha256_file(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(recipe).items()}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Stages:
    """A build folder's stages: each a cached `gaitlu` command, with its command line and wall time."""

    build: Path
    commands: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    wall_s: dict[str, float] = dataclasses.field(default_factory=dict)

    def run(self, stage: str, title: str, args: list[str]) -> None:
        self.commands[stage] = args
        self.wall_s[stage] = once(self.build / ".done" / stage, title, args)

    def timed(self, stage: str, title: str, args: list[str]) -> None:
        """Run every time (the stage writes into a fresh staging folder)."""
        start = time.perf_counter()
        gaitlu(title, args)
        self.commands[stage], self.wall_s[stage] = args, time.perf_counter() - start


@dataclass(frozen=True)
class Calibration:
    """Held-out synthetic people that calibrate scores into false accept rates: neither model trained
    on them, and they are not the demo gallery's people."""

    seed: int = 1000
    identities: int = 75  # x 12 walks: >= 10,000 subject comparisons, FAR 1e-3 is measured
    walks: int = 12


@dataclass(frozen=True)
class RealRecipe:
    """models/default: configs/casiab_default.yaml on every dev-set subject, from `init`'s weights (the
    synthetic model's; None: a fresh network). docs/training.md says why."""

    config: Path = REPO_CONFIGS / "casiab_default.yaml"
    partition: Path = REPO_CONFIGS / "casiab_all_partition.json"
    init: Path | None = MODELS["synthetic"] / CHECKPOINT_FILE  # the weights training starts from
    calibration: Calibration = Calibration()


@dataclass(frozen=True)
class SyntheticRecipe:
    """models/synthetic (docs/realism-log.md says why each number)."""

    seed: int = 99  # the unlabelled corpus; the labelled identities use seed + 1
    ssl_identities: int = 200  # unlabelled synthetic people, 4 walks each
    ssl_config: Path = REPO_CONFIGS / "gaitssb_tiny.yaml"
    ssl_steps: int = 100  # pretraining steps (BatchNorm statistics and a start)
    identities: int = 1500  # labelled synthetic people (60 % train the supervised stage)
    walks: int = 16  # walks per labelled person, each at a random CASIA-B view and condition
    supervised_config: Path = REPO_CONFIGS / "default_supervised.yaml"
    supervised_steps: int = 1000
    calibration: Calibration = Calibration()


Recipe = RealRecipe | SyntheticRecipe


def casiab_dev_tree(builds: Path, source: Path) -> Path:
    """The dev set as an OpenGait tree: $GAITLU_CASIAB_DEV when set (read-only), else unpacked once from
    the packed set at `source` by its own unpack.py; GaitluError saying what is needed otherwise."""
    given = os.environ.get("GAITLU_CASIAB_DEV")
    if given:
        return Path(given)
    tree, marker = builds / "casiab-dev", builds / ".casiab-dev-unpacked"
    if marker.exists():
        return tree
    if not (source / "unpack.py").is_file():
        raise GaitluError(
            "models/default is trained on the CASIA-B development set (real silhouettes of subjects "
            f"001-074), which is not in the repository and was not found at {source}. Put the packed set "
            "there (its README.md, TERMS.md, subjects/ and unpack.py), pass --casiab-dev PATH, or set "
            "GAITLU_CASIAB_DEV to an unpacked OpenGait tree (<subject>/<condition>/<view>/*.pkl). "
            "`make run MODEL=synthetic` needs no data."
        )
    console.rule("[bold]Unpack the CASIA-B development set[/bold]")
    subprocess.run([sys.executable, str(source / "unpack.py"), str(tree)], check=True)
    marker.touch()
    return tree


def build_real_model(model_dir: Path, builds: Path, recipe: RealRecipe, source: Path) -> Path:
    """The dev set -> `gaitlu train supervised` on all of it -> export, calibrate, publish."""
    stages = Stages(builds / f"default-{recipe_key(recipe)}")
    tree, run_dir = casiab_dev_tree(builds, source), stages.build / "train"
    command = args_of("train", "supervised", "--config", recipe.config, "--dataset", tree)
    command += args_of("--init", recipe.init) if recipe.init else []
    command += args_of(
        "--partition", recipe.partition, "--out", run_dir, "--device", "cpu", "--resume-if-exists"
    )
    stages.run("train", "Training on real people (CASIA-B 001-074, bf16 on CPU)", command)
    note = (
        "trained on the real silhouettes of CASIA-B subjects 001-074 (the CASIA-B development set); "
        "the weights carry CASIA-B's terms (MODEL_CARD.md)"
    )
    return finish(stages, run_dir, model_dir, recipe, note)


def build_synthetic_model(model_dir: Path, builds: Path, recipe: SyntheticRecipe) -> Path:
    """Synthetic data only -> SSL pretraining -> triplet training on synthetic identities -> publish."""
    stages = Stages(builds / f"synthetic-{recipe_key(recipe)}")
    build = stages.build
    corpus, shards, pretrain, labelled = (
        build / "corpus",
        build / "shards",
        build / "pretrain",
        build / "labelled",
    )
    stages.run(
        "corpus",
        "Synthetic unlabelled corpus (GaitLU-1M layout)",
        args_of("synth", "--out", corpus, "--subjects", recipe.ssl_identities, "--sequences-per-subject", 4)
        + args_of("--seed", recipe.seed, "--layout", "gaitlu", "--workers", 2),
    )
    stages.run(
        "shards", "Pack into shards", args_of("data", "pack", corpus / "silhouette_cut_pkl", "--out", shards)
    )
    gaitlu("Verify shards", ["data", "verify", str(shards)])
    stages.run(
        "pretrain",
        "Self-supervised pretraining (tiny GaitSSB, CPU)",
        args_of("train", "pretrain", "--config", recipe.ssl_config, "--data", shards, "--out", pretrain)
        + args_of("--max-steps", recipe.ssl_steps, "--device", "cpu", "--resume-if-exists"),
    )
    stages.run(
        "labelled",
        "Synthetic labelled identities (CASIA-B layout)",
        args_of("synth", "--out", labelled, "--subjects", recipe.identities, "--sequences-per-subject")
        + args_of(recipe.walks, "--seed", recipe.seed + 1, "--layout", "opengait", "--workers", 2),
    )
    from train.checkpoint import latest_checkpoint

    pretrained = latest_checkpoint(pretrain)
    if pretrained is None:
        raise GaitluError(f"pretraining left no checkpoint in {pretrain}")
    supervised = build / "supervised"
    stages.run(
        "supervised",
        "Supervised training on synthetic identities (triplet, CPU)",
        args_of("train", "finetune", "--config", recipe.supervised_config, "--init", pretrained)
        + args_of("--dataset", labelled, "--partition", labelled / "partition.json", "--out", supervised)
        + args_of("--max-steps", recipe.supervised_steps, "--device", "cpu", "--resume-if-exists"),
    )
    note = "trained only on synthetic walkers (gaitlu synth); no real silhouette was used"
    return finish(stages, supervised, model_dir, recipe, note)


def finish(stages: Stages, run_dir: Path, model_dir: Path, recipe: Recipe, note: str) -> Path:
    """Export the run's newest checkpoint, calibrate it, record the build and publish it to `model_dir`."""
    from train.checkpoint import atomic_save, latest_checkpoint, read_checkpoint

    final = latest_checkpoint(run_dir)
    if final is None:
        raise GaitluError(f"training left no checkpoint in {run_dir}")
    staging = stages.build / "publish"
    shutil.rmtree(staging, ignore_errors=True)
    stages.timed("export", "Export to ONNX", ["export", str(final), "--out", str(staging)])
    start = time.perf_counter()
    stages.commands["calibrate"] = calibrate(staging, stages.build.parent, recipe.calibration) or []
    stages.wall_s["calibrate"] = time.perf_counter() - start
    weights = read_checkpoint(final)
    slim = {**weights, "optimizer": None, "scheduler": None, "scaler": None, "head": None}  # weights only
    atomic_save(slim, staging / CHECKPOINT_FILE)
    record = {
        "recipe": {k: shown(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(recipe).items()},
        "commands": {k: "gaitlu " + " ".join(v) for k, v in stages.commands.items()},
        "wall_s": {k: round(v, 1) for k, v in stages.wall_s.items()},
        "checkpoint_sha256": sha256_file(staging / CHECKPOINT_FILE),
        "note": note,
    }
    write_atomic(staging / BUILD_RECORD, json.dumps(record, indent=1) + "\n")
    if (model_dir / MODEL_CARD).is_file():
        shutil.copy2(model_dir / MODEL_CARD, staging / MODEL_CARD)
    check_model(staging)
    publish(staging, model_dir)
    return model_dir


def calibrate(artifact: Path, builds: Path, calibration: Calibration) -> list[str] | None:
    """`gaitlu calibrate` on held-out synthetic people (GALLERY_WALKS enrolled per subject, as in the
    demo gallery), so scores come with false accept rates. Returns the command; None when the artifact
    was calibrated before."""
    if read_manifest(artifact).calibration is not None:
        console.print("[dim]- calibration: done before[/dim]")
        return None
    held_out, seed = builds / f"calibration-{recipe_key(calibration)}", calibration.seed
    once(
        held_out.with_suffix(".done"),
        "Held-out synthetic people for calibration",
        args_of("synth", "--out", held_out, "--subjects", calibration.identities, "--sequences-per-subject")
        + args_of(calibration.walks, "--seed", seed, "--layout", "opengait", "--workers", 2),
    )
    command = args_of("calibrate", "--artifact", artifact, "--dataset", held_out, "--enrolled-per-subject")
    command += args_of(GALLERY_WALKS, "--name", f"synthetic held-out people (seed {seed})")
    gaitlu("Calibrate the scores (score -> FAR)", command)
    return command


def check_model(model_dir: Path) -> None:
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
    if size > MAX_MODEL_BYTES:
        raise ArtifactError(f"{model_dir} holds {size / 2**20:.1f} MiB; a committed model is at most 25 MiB")


def publish(staging: Path, model_dir: Path) -> None:
    """Move the finished folder into place by renames: never a half-copied model."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    incoming, old = (model_dir.with_name(f".{model_dir.name}.{tag}") for tag in ("new", "old"))
    for stale in (incoming, old):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.copytree(staging, incoming)
    if model_dir.exists():
        os.replace(model_dir, old)
    os.replace(incoming, model_dir)
    shutil.rmtree(old, ignore_errors=True)


def shipped_model(
    model_dir: Path, builds: Path, recipe: Recipe, rebuild: bool, source: Path = CASIAB_DEV_SOURCE
) -> Path:
    """The committed model when it is there (checked against its hashes, then served at once), else
    built from scratch by its recipe."""
    if (model_dir / MANIFEST_NAME).exists() and not rebuild:
        try:
            check_model(model_dir)
        except ArtifactError as exc:
            raise GaitluError(
                f"the model in {model_dir} is damaged: {exc}. Restore it (`git checkout -- {model_dir}`) or "
                "rebuild it (`make default-model` / `make synthetic-model`)"
            ) from None
        console.print(f"[dim]- model: {model_dir} (checked against its recorded hashes)[/dim]")
        return model_dir
    console.print(
        f"[yellow]Building {model_dir} from scratch: up to 2 hours on 2 CPU cores (stages cached under "
        f"{builds}; its build.json records the measured stage times).[/yellow]"
    )
    if isinstance(recipe, RealRecipe):
        return build_real_model(model_dir, builds, recipe, source)
    return build_synthetic_model(model_dir, builds, recipe)
