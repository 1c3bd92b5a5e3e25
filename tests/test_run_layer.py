"""The run layer's parts: where a run starts, the data it hands the engine, its callbacks."""

from __future__ import annotations

import json

import pytest
import torch

from wanlora.demo import create_demo_project
from wanlora.errors import WanloraError
from wanlora.outputs import lora_path
from wanlora.run.callbacks import LossLog, StepPrinter
from wanlora.run.experts import check_experts, prepare_data, run_expert
from wanlora.train.callbacks import StepReport
from wanlora.train.state import TrainState, start_point, state_root

CPU = torch.device("cpu")


@pytest.fixture
def project(tmp_path):
    return create_demo_project(tmp_path / "project", epochs=1)


def put_state(project, expert: str, step: int, finished: bool):
    """A state folder as train/state.py writes it (meta.json marks it complete)."""
    folder = state_root(project.output_dir, expert) / f"step-{step:08d}"
    folder.mkdir(parents=True)
    meta = TrainState(step, 1, 0, finished, "data", "recipe")
    (folder / "meta.json").write_text(json.dumps(meta.__dict__))
    return folder


def test_start_point_fresh_resumed_done_or_refused(project):
    out, lora = project.output_dir, lora_path(project, "high")
    assert start_point(out, "high", lora, overwrite=False, restart=False).state_dir is None
    lora.parent.mkdir(parents=True, exist_ok=True)
    lora.write_bytes(b"a LoRA from another run")
    with pytest.raises(WanloraError, match="already exists -- pass --new-run"):
        start_point(out, "high", lora, overwrite=False, restart=False)
    assert start_point(out, "high", lora, overwrite=True, restart=False).state_dir is None
    half = put_state(project, "high", 5, finished=False)
    assert start_point(out, "high", lora, overwrite=True, restart=False).state_dir == half
    assert start_point(out, "high", lora, overwrite=True, restart=True).state_dir is None
    done = put_state(project, "high", 18, finished=True)
    point = start_point(out, "high", lora, overwrite=False, restart=False)
    assert point.state_dir == done and point.done_steps == 18
    redo = start_point(out, "high", lora, overwrite=True, restart=False)  # redone from scratch
    assert redo.state_dir is None and redo.done_steps is None
    lora.unlink()  # finished but the LoRA is gone: resume the finished state to write it
    point = start_point(out, "high", lora, overwrite=False, restart=False)
    assert point.state_dir == done and point.done_steps is None


def test_an_expert_already_trained_is_skipped_before_any_cache_work(project):
    lora = lora_path(project, "low")
    lora.parent.mkdir(parents=True, exist_ok=True)
    lora.write_bytes(b"trained")
    put_state(project, "low", 18, finished=True)
    result = run_expert(project, "low", device=CPU)
    assert result.skipped and result.steps == 18 and result.lora_path == lora
    assert not project.cache_dir.exists() or not any(project.cache_dir.iterdir())


def test_prepared_data_is_one_sample_per_item_and_a_stable_identity(project):
    data = prepare_data(project, CPU)
    assert len(data.samples) == len(data.items) == 18
    latent, text = data.samples[0]
    assert latent.shape[0] == 16 and text.shape[1] == 64  # the tiny VAE's and umT5's widths
    again = prepare_data(project, CPU)  # the cache reused: same keys, same identity
    assert again.dataset_hash == data.dataset_hash and len(data.dataset_hash) == 16


def test_unknown_experts_are_named(project):
    check_experts(project, ["low", "high"])
    with pytest.raises(WanloraError, match="unknown expert 'mid' .* use one of: high, low"):
        check_experts(project, ["high", "mid"])


def test_loss_log_writes_loss_and_lr_per_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with LossLog(tmp_path / "high") as log:
        for step in (1, 2):
            log(StepReport("high", step, 2, 0.5 / step, 1e-4, 0.1))
    events = EventAccumulator(str(tmp_path / "high"))
    events.Reload()
    assert [e.value for e in events.Scalars("loss")] == [0.5, 0.25]
    assert [e.step for e in events.Scalars("lr")] == [1, 2]


def test_step_printer_prints_the_first_and_last_step_and_at_most_every_interval(capsys):
    printer = StepPrinter(every=3600)
    for step in range(1, 6):
        printer(StepReport("low", step, 5, 0.125, 2e-4, 0.5))
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "low 1/5 loss 0.1250 lr 2.00e-04 0.50 s/step",
        "low 5/5 loss 0.1250 lr 2.00e-04 0.50 s/step",
    ]


def test_a_launch_trains_like_wanlora_train(project, capsys):
    """`python -m wanlora.run.launch DIR` without a launcher's environment: one process."""
    from wanlora.run.launch import main

    assert main([str(project.root), "--expert", "high"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("high 1/18 loss ")
    assert f"high: 18 steps -> {lora_path(project, 'high')}" in out
    assert out[-1].startswith("high: high-noise LoRA changes the prediction by")  # the verdict
    assert not lora_path(project, "low").exists()


def test_output_layout_names_the_sample_files():
    from wanlora.outputs import OutputLayout

    assert OutputLayout.training_sample_stem("high", 3, 1, 42) == "train_high_e0003_p01_seed42"
    assert OutputLayout.sample_stem(0, 7, "high1_low0.5") == "p00_seed7_high1_low0.5"
    assert OutputLayout.compare_stem([1, 2, 3], "high1") == "compare_seed1-2-3_high1"
    assert OutputLayout.compare_stem(list(range(9)), "low1") == "compare_seed0-8_low1"
