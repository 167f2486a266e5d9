"""Training configs read strictly: YAML numbers as an author means them, wrong types refused by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gaitlu.errors import ConfigError
from train.config import build_config, load_config
from train.supervised import SupervisedConfig


def loaded(tmp_path: Path, text: str) -> SupervisedConfig:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path, SupervisedConfig)


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    config = loaded(tmp_path, "optimizer: {lr: 1e-3, weight_decay: 5E-4}\nscheduler: {gamma: 1e-1}\n")
    assert config.optimizer.lr == 0.001 and isinstance(config.optimizer.lr, float)
    assert config.optimizer.weight_decay == 0.0005 and config.scheduler.gamma == 0.1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scheduler: {gamma: 'abc'}\n", "scheduler.gamma: expected a number, got 'abc'"),
        ("optimizer: {lr: '1e-3'}\n", "optimizer.lr: expected a number, got '1e-3'"),  # quoted: a string
        ("optimizer: {lr: true}\n", "optimizer.lr: expected a number, got True"),
        ("trainer: {max_steps: 10.5}\n", "trainer.max_steps: expected int, got 10.5"),
        ("scheduler: {milestones: [1, x]}\n", "scheduler.milestones[1]: expected int, got 'x'"),
    ],
)
def test_wrong_types_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        loaded(tmp_path, text)


@dataclass(frozen=True)
class Section:
    weights: dict[str, float] = field(default_factory=dict)
    limit: int | float | None = None


def test_dict_values_and_every_member_of_a_union_are_checked() -> None:
    assert build_config(Section, {"weights": {"a": 1}}).weights == {"a": 1.0}
    with pytest.raises(ConfigError, match=r"weights\.b: expected a number"):
        build_config(Section, {"weights": {"b": "heavy"}})
    assert build_config(Section, {"limit": 2.5}).limit == 2.5  # the second member of int | float
    with pytest.raises(ConfigError, match="expected int, got 'x' or limit: expected a number"):
        build_config(Section, {"limit": "x"})
