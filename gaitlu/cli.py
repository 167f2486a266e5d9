"""The `gaitlu` command: a thin face over each stage's own commands.

Each subcommand names the module that owns it; the module is imported only when that command runs
(or its --help is shown), so `gaitlu data ...` never imports torch and `gaitlu serve` never imports train/.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import typer
import typer.core
import typer.main

from gaitlu.errors import GaitluError

PACKAGES = (
    "gaitlu",
    "corpus",
    "synth",
    "video",
    "train",
    "export",
    "runtime",
    "gallery",
    "audit",
    "engine",
    "service",
    "client",
    "workflows",
)  # every package's logger, for setup_logging

# name -> ("module:attribute", one-line help). The attribute is a typer.Typer app.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("corpus.cli:data_app", "GaitLU-1M corpus tools: index, pack into shards, verify."),
    "synth": ("synth.cli:app", "Generate a synthetic silhouette corpus (labelled or GaitLU-style)."),
    "eval": ("workflows.eval:app", "Evaluate under a gait protocol (CASIA-B, OU-MVLP, GREW, Gait3D)."),
    "calibrate": ("workflows.calibrate:app", "Measure what an artifact's scores mean: score -> FAR tables."),
    "train": ("train.cli:app", "Pretrain, fine-tune, import OpenGait checkpoints (needs torch)."),
    "export": ("export.cli:app", "Export a checkpoint to an ONNX artifact (needs torch)."),
    "parity": ("runtime.cli:app", "Check an artifact's backends against fp32 onnxruntime (OpenVINO)."),
    "serve": ("service.cli:app", "Run the HTTP service (embed, search, galleries)."),
    "demo": ("workflows.demo:app", "The README main job: build the demo end to end."),
    "enroll": ("client.cli:enroll_app", "Enrol a dataset folder into a gallery (resumable; or --offline)."),
    "search": ("client.cli:search_app", "Search a gallery on the server with sequences or videos."),
    "audit": ("audit.cli:app", "The audit trail: verify its hash chain, export it, apply retention."),
    "galleries": ("client.cli:galleries_app", "List the server's galleries and their sizes."),
    "video": ("video.cli:app", "Extract silhouette sequences from walking-person videos."),
}


class LazyGroup(typer.core.TyperGroup):
    """A command group whose subcommands are imported on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise GaitluError(
                f"'gaitlu {cmd_name}' needs the '{exc.name}' module, which is not installed "
                f"(install the matching extra, e.g. pip install 'gaitlu[train]')."
            ) from exc
        command = typer.main.get_command(getattr(module, attr))
        command.name = cmd_name
        return command

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # Help lists names and summaries without importing every stage.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


cli = LazyGroup(
    name="gaitlu",
    rich_markup_mode=None,
    help="Gait recognition: data, training, export, galleries and the service.",
)


def setup_logging() -> None:
    """One logging set-up for every command: our stages at INFO, third-party chatter at WARNING."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for package in PACKAGES:
        logging.getLogger(package).setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors exit 2 with typer's message; user-facing errors print one line, exit 2."""
    setup_logging()
    try:
        cli.main(args=argv, prog_name="gaitlu")
    except GaitluError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
