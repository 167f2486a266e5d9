"""Training configs read strictly: YAML numbers as an author means them, wrong types refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from gaitlu.cli import main
from gaitlu.errors import ConfigError
from train.config import ConfigModel, TrainerConfig, build_config, config_to_dict, load_config, replace
from train.supervised import SupervisedConfig

REPO = Path(__file__).resolve().parents[1]


def loaded(tmp_path: Path, text: str) -> SupervisedConfig:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path, SupervisedConfig)


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    config = loaded(tmp_path, "optimizer: {lr: 1e-3, weight_decay: 5E-4}\nscheduler: {gamma: 1e-1}\n")
    assert config.optimizer.lr == 0.001 and isinstance(config.optimizer.lr, float)
    assert config.optimizer.weight_decay == 0.0005 and config.scheduler.gamma == 0.1


def test_an_int_is_a_float_where_a_float_is_asked(tmp_path: Path) -> None:
    config = loaded(tmp_path, "optimizer: {lr: 2}\nscheduler: {milestones: [5, 9]}\n")
    assert config.optimizer.lr == 2.0 and isinstance(config.optimizer.lr, float)
    assert config.scheduler.milestones == (5, 9)  # YAML's list, the config's tuple


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scheduler: {gamma: 'abc'}\n", "scheduler.gamma: input should be a valid number, got 'abc'"),
        ("optimizer: {lr: '1e-3'}\n", "optimizer.lr: input should be a valid number, got '1e-3'"),  # quoted
        ("optimizer: {lr: true}\n", "optimizer.lr: input should be a valid number, got True"),
        ("optimizer: {lr: .nan}\n", "optimizer.lr: input should be a finite number, got nan"),
        ("trainer: {max_steps: 10.5}\n", "trainer.max_steps: input should be a valid integer, got 10.5"),
        ("trainer: {max_steps: 0}\n", "trainer.max_steps: input should be greater than 0, got 0"),
        ("trainer: {compile: 1}\n", "trainer.compile: input should be a valid boolean, got 1"),
        (
            "scheduler: {milestones: [1, x]}\n",
            "scheduler.milestones[1]: input should be a valid integer, got 'x'",
        ),
        (
            "optimizer: {solver: rmsprop}\n",
            "optimizer.solver: input should be 'sgd' or 'adam', got 'rmsprop'",
        ),
        (
            "optimizer: {lrr: 0.1}\n",
            "optimizer.lrr: unknown key; known: ['lr', 'momentum', 'solver', 'weight_decay']",
        ),
        ("optimizer: 0.1\n", "optimizer: input should be a valid dictionary"),
        (
            "model: {config: {channels: [8, 16, x, 64]}}\n",
            "model.config.channels[2]: input should be a valid integer",
        ),
        ("model: {config: {widths: [8]}}\n", "model.config.widths: unknown key"),
    ],
)
def test_wrong_types_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        loaded(tmp_path, text)
    assert message in str(raised.value)


class Section(ConfigModel):
    weights: dict[str, float] = Field(default_factory=dict)
    limit: int | float | None = None


def test_dict_values_and_every_member_of_a_union_are_checked() -> None:
    assert build_config(Section, {"weights": {"a": 1}}).weights == {"a": 1.0}
    with pytest.raises(ConfigError, match=r"weights\.b: input should be a valid number, got 'heavy'"):
        build_config(Section, {"weights": {"b": "heavy"}})
    assert build_config(Section, {"limit": 2.5}).limit == 2.5  # the second member of int | float
    with pytest.raises(ConfigError, match="limit"):
        build_config(Section, {"limit": "x"})


def test_replace_checks_the_changes_and_the_saved_config_round_trips() -> None:
    with pytest.raises(ConfigError, match=r"max_steps: input should be greater than 0"):
        replace(TrainerConfig(), max_steps=0)
    config = SupervisedConfig()
    assert build_config(SupervisedConfig, config_to_dict(config)) == config  # what a checkpoint stores


def test_every_config_in_the_repository_loads() -> None:
    from train.finetune import FinetuneConfig
    from train.pretrain import PretrainConfig

    kinds = {"supervised": SupervisedConfig, "finetune": FinetuneConfig, "gaitssb": PretrainConfig}
    kinds |= {"casiab_default": SupervisedConfig, "default_supervised": FinetuneConfig}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        kind = next(cls for prefix, cls in kinds.items() if path.stem.startswith(prefix))
        load_config(path, kind)


def test_the_cli_prints_the_problem_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("scheduler: {gamma: 'abc'}\n")
    args = [
        "--dataset",
        str(tmp_path),
        "--partition",
        str(tmp_path / "p.json"),
        "--out",
        str(tmp_path / "run"),
    ]
    with pytest.raises(SystemExit) as exited:
        main(["train", "supervised", "--config", str(config), *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {config}: scheduler.gamma: input should be a valid number, got 'abc'\n"
