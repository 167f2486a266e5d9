"""The shared training skeleton (train/run.py): the fp16 skip rule, resume compatibility, run-folder modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gaitlu.errors import ConfigError
from train import checkpoint
from train.augment import AugmentConfig
from train.config import OptimizerConfig, SchedulerConfig, TrainerConfig, config_to_dict, replace
from train.model import GaitSSB, ModelConfig
from train.pretrain import RESUME_MAY_CHANGE, PretrainConfig
from train.run import TrainState, check_resumable, optimizer_step, prepare_run_dir, resume_mode

CPU = torch.device("cpu")


def tiny_state(precision: str) -> TrainState:
    """A real (narrow) GaitSSB with SGD lr 0.1 and an LR milestone after the first applied step."""
    torch.manual_seed(0)
    model = GaitSSB(ModelConfig(channels=(4, 8, 8, 8)))
    schedule = SchedulerConfig(milestones=(1,), gamma=0.1)
    return TrainState.create(model, model.parameters(), OptimizerConfig(lr=0.1), schedule, precision, CPU)


def projection_loss(state: TrainState, factor: float) -> torch.Tensor:
    clips = torch.rand(2, 4, 64, 44, generator=torch.Generator().manual_seed(1))
    return state.model.projector(state.model.encode(clips)).pow(2).mean() * factor


def parameters(state: TrainState) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in state.model.named_parameters()}


# ------------------------------------------------------------------------------------ one step


def test_the_lr_schedule_waits_when_the_fp16_scaler_skips_a_step() -> None:
    state = tiny_state("fp16")  # a real, enabled GradScaler (PyTorch has a CPU one)
    assert state.scaler.is_enabled()
    before = parameters(state)
    assert not optimizer_step(projection_loss(state, float("inf")), state)  # overflowing gradients
    assert state.scaler.get_scale() == 2.0**15  # the scaler backed off instead of stepping ...
    assert all(torch.equal(before[k], v) for k, v in parameters(state).items())  # ... the weights held
    assert state.scheduler.last_epoch == 0  # and the schedule did not move: milestone 1 still ahead
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)

    assert optimizer_step(projection_loss(state, 1.0), state)
    assert state.scheduler.last_epoch == 1
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # the milestone, one step late
    assert any(not torch.equal(before[k], v) for k, v in parameters(state).items())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_without_a_scaler_every_step_is_applied(precision: str) -> None:
    state = tiny_state(precision)
    assert not state.scaler.is_enabled()
    # Even an infinite loss is "applied" (and poisons the weights): the loop's finiteness guard is
    # what stops such a run before a checkpoint.
    assert optimizer_step(projection_loss(state, float("inf")), state)
    assert state.scheduler.last_epoch == 1
    assert not all(p.isfinite().all() for p in parameters(state).values())


# ----------------------------------------------------------------------------- resume checks


def saved_as(config: PretrainConfig, world_size: int = 1) -> dict:
    """The parts of a checkpoint `check_resumable` reads, as a run with `config` writes them."""
    return {
        "config": config_to_dict(config),
        "model_config": config_to_dict(config.model),
        "world_size": world_size,
    }


FP32 = PretrainConfig(trainer=TrainerConfig(precision="fp32"))


def check(ckpt: dict, config: PretrainConfig, world_size: int = 1) -> None:
    check_resumable(ckpt, Path("step-00000010.pt"), config, config.model, world_size, RESUME_MAY_CHANGE)


def test_pace_and_loader_settings_may_change_on_resume() -> None:
    paced = replace(
        FP32,
        trainer=replace(FP32.trainer, max_steps=10, log_every=5, checkpoint_every=7, keep_last=1),
        data=replace(FP32.data, num_workers=1, prefetch_factor=4),
    )
    check(saved_as(FP32), paced)


def test_checkpoints_from_before_the_augment_section_still_resume() -> None:
    old = saved_as(FP32)
    del old["config"]["augment"]  # written when augmentation settings were module constants
    check(old, FP32)


def test_resuming_an_fp32_checkpoint_in_fp16_is_refused_with_the_reason() -> None:
    fp16 = replace(FP32, trainer=replace(FP32.trainer, precision="fp16"))
    with pytest.raises(ConfigError) as caught:
        check(saved_as(FP32), fp16)
    message = str(caught.value)
    assert "step-00000010.pt was trained with a different setup" in message
    assert "trainer.precision: fp32 in the checkpoint, fp16 here" in message
    assert "another --out" in message


def test_every_difference_that_matters_is_listed_at_once() -> None:
    changed = replace(
        FP32,
        optimizer=OptimizerConfig(lr=0.1),
        augment=AugmentConfig(p_flip=0.0),
        model=replace(FP32.model, channels=(8, 16, 32, 64)),
    )
    with pytest.raises(ConfigError) as caught:
        check(saved_as(FP32), changed)
    message = str(caught.value)
    for line in (
        "optimizer.lr: 0.05 in the checkpoint, 0.1 here",
        "augment.p_flip: 0.5 in the checkpoint, 0.0 here",
        "model.channels: [64, 128, 256, 512] in the checkpoint, [8, 16, 32, 64] here",
    ):
        assert line in message


def test_resuming_with_fewer_processes_than_trained_it_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"processes: 8 trained it, this run has 4 .*resume with 8"):
        check(saved_as(FP32, world_size=8), FP32, world_size=4)


# ------------------------------------------------------------------------------- run folders


def test_resume_modes_pick_the_newest_checkpoint_or_refuse(tmp_path: Path) -> None:
    empty, used = tmp_path / "empty", tmp_path / "used"
    assert prepare_run_dir(empty, "no") is None
    assert prepare_run_dir(empty, "if-exists") is None
    with pytest.raises(ConfigError, match="--resume: no checkpoint in"):
        prepare_run_dir(empty, "yes")
    for step in (3, 12):
        (used / checkpoint.CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        (used / checkpoint.CHECKPOINT_DIR / checkpoint.checkpoint_name(step)).write_bytes(b"")
    newest = used / checkpoint.CHECKPOINT_DIR / "step-00000012.pt"
    assert prepare_run_dir(used, "yes") == newest
    assert prepare_run_dir(used, "if-exists") == newest
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        prepare_run_dir(used, "no")


def test_a_crash_mid_save_leaves_a_folder_that_only_resume_if_exists_starts_afresh_in(tmp_path: Path) -> None:
    """What `gaitlu demo` relies on: a killed first save leaves checkpoints/ holding a temp file only."""
    folder = tmp_path / "run" / checkpoint.CHECKPOINT_DIR
    folder.mkdir(parents=True)
    (folder / ".step-00000004.pt.k3j2.tmp").write_bytes(b"half a checkpoint")
    assert prepare_run_dir(tmp_path / "run", "if-exists") is None
    with pytest.raises(ConfigError, match="--resume: no checkpoint in"):
        prepare_run_dir(tmp_path / "run", "yes")


def test_the_two_resume_flags_exclude_each_other() -> None:
    assert [resume_mode(False, False), resume_mode(True, False), resume_mode(False, True)] == [
        "no",
        "yes",
        "if-exists",
    ]
    with pytest.raises(ConfigError, match="not both"):
        resume_mode(True, True)


def test_a_resume_drops_later_records_and_a_torn_last_line_from_the_metrics(tmp_path: Path) -> None:
    """Metrics are appended a line per record; a kill mid-append leaves half a line, which a resume must
    survive (it used to stop on the JSON error)."""
    from train.run import truncate_metrics

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        '{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.9}\n{"step": 30, "loss": 0.8}\n{"st'
    )
    truncate_metrics(metrics, 20)
    assert metrics.read_text() == '{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.9}\n'
    truncate_metrics(tmp_path / "absent.jsonl", 20)  # a first run has none
    assert not (tmp_path / "absent.jsonl").exists()
