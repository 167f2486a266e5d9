"""`gaitlu train ...`: one function per subcommand, each importing its (torch-heavy) module when run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gaitlu.errors import ConfigError

if TYPE_CHECKING:  # the modules themselves import torch: only when a command runs
    from train.run import RunResult

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def train_group() -> None:
    """Pretrain, train with labels, fine-tune, import OpenGait checkpoints (needs torch)."""


def setup_logging(master: bool) -> None:
    """Only rank 0 reports progress; the face (gaitlu.cli) configured the handlers."""
    if not master:
        logging.getLogger("train").setLevel(logging.WARNING)


ResumeOption = Annotated[
    bool, typer.Option(help="Continue from the newest checkpoint in --out (one must exist).")
]
ResumeIfExistsOption = Annotated[
    bool,
    typer.Option(
        help="Continue from the newest checkpoint in --out if there is one, else start: for preemptible jobs "
        "that rerun the same command."
    ),
]
MaxStepsOption = Annotated[int | None, typer.Option(help="Stop at this step (overrides trainer.max_steps).")]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
OutOption = Annotated[Path, typer.Option(help="Run folder: checkpoints/, tb/, metrics.jsonl, config.yaml.")]


def finish(result: RunResult) -> None:
    """Exit 143 (interrupted) after a SIGTERM: checkpointed but not finished, so scripts must not carry on."""
    if result.stopped:
        typer.echo(f"stopped by SIGTERM at step {result.step}; continue with --resume", err=True)
        raise typer.Exit(143)


@app.command()
def pretrain(
    config: Annotated[Path, typer.Option(help="Experiment YAML, e.g. configs/gaitssb_pretrain.yaml.")],
    data: Annotated[
        Path, typer.Option(help="Corpus: a `gaitlu data pack` folder or a silhouette_cut_pkl tree.")
    ],
    out: OutOption,
    resume: ResumeOption = False,
    resume_if_exists: ResumeIfExistsOption = False,
    nproc: Annotated[int, typer.Option(help="Local processes to launch (torchrun); GPUs when on CUDA.")] = 1,
    max_steps: MaxStepsOption = None,
    device: DeviceOption = "auto",
) -> None:
    """GaitSSB self-supervised pretraining on an unlabelled corpus (GaitLU-1M or synthetic)."""
    from train import distributed
    from train import pretrain as loop
    from train.run import resume_mode, with_max_steps

    setup_logging(master=os.environ.get("RANK", "0") == "0")
    mode = resume_mode(resume, resume_if_exists)
    cfg = with_max_steps(loop.load_pretrain_config(config), max_steps)
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if nproc == 1 or distributed.env_world_size() > 1:
        if nproc > 1:
            raise ConfigError("--nproc launches processes; under torchrun use its --nproc_per_node")
        finish(loop.train(cfg, data, out, resume=mode, device=device))
        return
    loop.check_launch(cfg, data, out, mode, device, nproc)
    args = ["--config", str(config), "--data", str(data), "--out", str(out), "--device", device]
    args += ["--resume"] if resume else ["--resume-if-exists"] if resume_if_exists else []
    args += ["--max-steps", str(max_steps)] if max_steps is not None else []
    code = distributed.launch_local(nproc, "train.pretrain", args)
    if code:
        raise typer.Exit(code)


@app.command()
def finetune(
    config: Annotated[Path, typer.Option(help="Fine-tuning YAML, e.g. configs/finetune_casiab.yaml.")],
    init: Annotated[Path, typer.Option(help="gaitlu checkpoint to start from (pretrained or imported).")],
    dataset: Annotated[Path, typer.Option(help="Labelled dataset root: <subject>/<condition>/<view>/*.pkl.")],
    partition: Annotated[Path, typer.Option(help="Partition JSON; its TRAIN_SET subjects are trained on.")],
    out: OutOption,
    resume: ResumeOption = False,
    resume_if_exists: ResumeIfExistsOption = False,
    max_steps: MaxStepsOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Fine-tune a GaitSSB with the triplet loss on a labelled dataset (OpenGait's GaitSSB recipe)."""
    from train import finetune as loop
    from train.config import load_config
    from train.run import resume_mode, with_max_steps

    setup_logging(master=True)
    mode = resume_mode(resume, resume_if_exists)
    cfg = with_max_steps(load_config(config, loop.FinetuneConfig), max_steps)
    result = loop.finetune(cfg, init, dataset, partition, out, resume=mode, device=device)
    finish(result)
    typer.echo(f"fine-tuned checkpoint: {result.checkpoint}")


@app.command()
def supervised(
    config: Annotated[Path, typer.Option(help="Training YAML, e.g. configs/supervised_gaitbase.yaml.")],
    dataset: Annotated[Path, typer.Option(help="Labelled dataset root: <subject>/<condition>/<view>/*.pkl.")],
    partition: Annotated[Path, typer.Option(help="Partition JSON; its TRAIN_SET subjects are trained on.")],
    out: OutOption,
    init: Annotated[
        Path | None,
        typer.Option(help="Start from this gaitlu checkpoint (same architecture) instead of from scratch."),
    ] = None,
    resume: ResumeOption = False,
    resume_if_exists: ResumeIfExistsOption = False,
    max_steps: MaxStepsOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Train any registered architecture with labels (triplet + BNNeck cross-entropy, OpenGait's recipes)."""
    from train import supervised as loop
    from train.config import load_config
    from train.run import resume_mode, with_max_steps

    setup_logging(master=True)
    mode = resume_mode(resume, resume_if_exists)
    cfg = with_max_steps(load_config(config, loop.SupervisedConfig), max_steps)
    result = loop.train(cfg, dataset, partition, out, init=init, resume=mode, device=device)
    finish(result)
    typer.echo(f"trained checkpoint: {result.checkpoint}")


@app.command("import-opengait")
def import_opengait(
    checkpoint: Annotated[Path, typer.Argument(help="OpenGait checkpoint (.pt) to convert.")],
    out: Annotated[Path, typer.Option(help="Where to write the gaitlu checkpoint.")],
    config: Annotated[
        Path | None,
        typer.Option(
            help="The OpenGait YAML the checkpoint was trained with (its model_cfg builds the network, its "
            "evaluator_cfg is recorded for gaitlu eval). Needed for every model but GaitSSB."
        ),
    ] = None,
    form: Annotated[
        str,
        typer.Option(help="GaitSSB without --config: auto (from the keys), pretrain or finetune."),
    ] = "auto",
) -> None:
    """Convert an OpenGait checkpoint (GaitBase, DeepGaitV2, GaitSet, GaitGL, GaitSSB) into a gaitlu
    checkpoint: weights only, no code runs; unknown, missing or mis-shaped keys are refused."""
    from train.config import config_to_dict
    from train.opengait import import_opengait as convert
    from train.zoo.registry import architecture_of

    model = convert(checkpoint, out, form, config)
    name = architecture_of(model).name
    layout = model.config.layout
    typer.echo(f"{out}: {name} {config_to_dict(model.config)}, embedding {layout.parts} x {layout.part_dim}")
