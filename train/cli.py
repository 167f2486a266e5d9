"""`gaitlu train ...`: one function per subcommand, each importing its (torch-heavy) module when run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from gaitlu.errors import ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def train_group() -> None:
    """Pretrain, fine-tune, import OpenGait checkpoints (needs torch)."""


def setup_logging(master: bool) -> None:
    """Only rank 0 reports progress; the face (gaitlu.cli) configured the handlers."""
    if not master:
        logging.getLogger("train").setLevel(logging.WARNING)


@app.command()
def pretrain(
    config: Annotated[Path, typer.Option(help="Experiment YAML, e.g. configs/gaitssb_pretrain.yaml.")],
    data: Annotated[
        Path, typer.Option(help="Corpus: a `gaitlu data pack` folder or a silhouette_cut_pkl tree.")
    ],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints/, tb/, metrics.jsonl, config.yaml.")],
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    nproc: Annotated[int, typer.Option(help="Local processes to launch (torchrun); GPUs when on CUDA.")] = 1,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop at this step (overrides trainer.max_steps).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
) -> None:
    """GaitSSB self-supervised pretraining on an unlabelled corpus (GaitLU-1M or synthetic)."""
    from train import distributed
    from train import pretrain as loop

    setup_logging(master=os.environ.get("RANK", "0") == "0")
    cfg = loop.with_max_steps(loop.load_pretrain_config(config), max_steps)
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if nproc == 1 or distributed.env_world_size() > 1:
        if nproc > 1:
            raise ConfigError("--nproc launches processes; under torchrun use its --nproc_per_node")
        result = loop.train(cfg, data, out, resume=resume, device=device)
        if result.stopped:  # checkpointed, but not finished: scripts must not carry on as if it were
            typer.echo(f"stopped by SIGTERM at step {result.step}; continue with --resume", err=True)
            raise typer.Exit(143)
        return
    loop.check_launch(cfg, data, out, resume, device, nproc)
    args = ["--config", str(config), "--data", str(data), "--out", str(out), "--device", device]
    args += ["--resume"] if resume else []
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
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints/, tb/, metrics.jsonl, config.yaml.")],
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop at this step (overrides trainer.max_steps).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
) -> None:
    """Fine-tune a GaitSSB with the triplet loss on a labelled dataset (OpenGait's GaitSSB recipe)."""
    from train import finetune as loop
    from train.config import load_config

    setup_logging(master=True)
    cfg = loop.with_max_steps(load_config(config, loop.FinetuneConfig), max_steps)
    last = loop.finetune(cfg, init, dataset, partition, out, resume=resume, device=device)
    typer.echo(f"fine-tuned checkpoint: {last}")


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
    typer.echo(
        f"{out}: {name} {config_to_dict(model.config)}, embedding {model.config.parts} x {model.config.dim}"
    )
