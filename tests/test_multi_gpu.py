"""Several processes on CPU (gloo): experts side by side, one expert data-parallel, failures.

The multi-process tests spawn 2 workers on the tiny demo models, as `--devices cpu,cpu` does;
the same code runs one worker per GPU with NCCL.
"""

from __future__ import annotations

import logging
import shutil
import sys

import pytest
import torch

from project_edits import set_training
from wanlora.cache.build import build_cache
from wanlora.dataset.items import load_items
from wanlora.dataset.order import epoch_batches
from wanlora.demo import create_demo_project
from wanlora.errors import WanloraError
from wanlora.lora.file import read_lora_file
from wanlora.outputs import lora_path
from wanlora.recipes import load_project
from wanlora.run.experts import run_expert
from wanlora.run.jobs import Job, plan_jobs
from wanlora.run.training import run_training
from wanlora.train.data_parallel import DataParallel
from wanlora.train.state import latest_state_dir, read_state_meta, read_trainer_state

CPU2 = ["cpu", "cpu"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The demo project with its cache built once (copies reuse it: keys are content hashes)."""
    root = tmp_path_factory.mktemp("mgpu") / "project"
    project = create_demo_project(root, epochs=1)
    build_cache(project, device=torch.device("cpu"))
    return root


@pytest.fixture
def project_dir(template, tmp_path):
    target = tmp_path / "project"
    shutil.copytree(template, target)
    return target



# --- planning -------------------------------------------------------------------------------


def test_plan_defaults_and_refusals():
    both = ["high", "low"]
    assert plan_jobs(both, CPU2) == [[Job("high", ("cpu",)), Job("low", ("cpu",))]]
    assert plan_jobs(both, CPU2, parallel_experts=False) is None  # the plain loop
    assert plan_jobs(["high"], CPU2) is None
    assert plan_jobs(both, ["cuda:0"]) is None  # one GPU: one after the other, in-process
    assert plan_jobs(both, ["cuda:0", "cuda:1"], data_parallel=2) == [
        [Job("high", ("cuda:0", "cuda:1"))],
        [Job("low", ("cuda:0", "cuda:1"))],
    ]
    four = [f"cuda:{i}" for i in range(4)]
    assert plan_jobs(both, four, data_parallel=2) == [
        [Job("high", ("cuda:0", "cuda:1")), Job("low", ("cuda:2", "cuda:3"))]
    ]
    with pytest.raises(WanloraError, match="needs 2 devices"):
        plan_jobs(both, ["cuda:0"], parallel_experts=True)
    with pytest.raises(WanloraError, match="--data-parallel 2 needs 2 devices"):
        plan_jobs(["high"], ["cuda:0"], data_parallel=2)
    with pytest.raises(WanloraError, match="share a GPU"):
        plan_jobs(["high"], ["cuda:0", "cuda:0"], data_parallel=2)


def test_data_parallel_shards_each_step_group_of_the_epoch_order(project_dir):
    """Per optimiser step, the ranks' batches together are exactly that step's group of
    the one-process epoch order (accumulation x N consecutive batches), each batch once."""
    items = load_items(load_project(project_dir))
    for world, accumulation in ((2, 1), (4, 1), (2, 3)):
        ranks = [DataParallel(r, world) for r in range(world)]
        group = accumulation * world
        batches = epoch_batches(items, 1, epoch=3, seed=5)
        for start in range(0, len(batches), group):
            indices = range(start, min(start + group, len(batches)))
            owned = [[b for b in indices if dp.owns(b)] for dp in ranks]
            assert sorted(b for share in owned for b in share) == list(indices)
            assert all(len(share) <= accumulation for share in owned)


def test_data_parallel_config_is_the_one_process_config_with_n_times_the_accumulation(
    project_dir,
):
    config = load_project(project_dir).config
    effective = DataParallel(0, 2).effective_config(config)
    assert effective.training.gradient_accumulation_steps == 2
    assert config.training.gradient_accumulation_steps == 1  # the project's config untouched


# --- processes ------------------------------------------------------------------------------


def test_expert_parallel_trains_both_experts_at_once(project_dir, caplog):
    project = load_project(project_dir)
    reports = []
    with caplog.at_level(logging.INFO, logger="wanlora"):
        results = run_training(project, devices=CPU2, on_step=reports.append)
    # each worker's log lines (its plan, CUDA graph on/off) reach the parent, marked
    assert "[high, cpu] high: CUDA graph off (not on a GPU)" in caplog.messages
    assert "[low, cpu] low: CUDA graph off (not on a GPU)" in caplog.messages
    assert [r.expert for r in results] == ["high", "low"]
    assert [r.steps for r in results] == [18, 18]
    assert {(r.expert, r.step) for r in reports} == {
        (e, s) for e in ("high", "low") for s in range(1, 19)
    }  # the parent saw both workers' progress
    for expert in ("high", "low"):
        tensors, meta = read_lora_file(lora_path(project, expert))
        assert meta["ss_steps"] == "18" and meta["wanlora.expert"] == expert
        assert torch.count_nonzero(tensors["lora_unet_blocks_0_self_attn_q.lora_up.weight"]) > 0
        assert read_state_meta(latest_state_dir(project.output_dir, expert)).finished
    # the same numbers as training the expert alone, in this process (bitwise, as measured)
    alone = project_dir.parent / "alone"
    shutil.copytree(project_dir, alone, ignore=shutil.ignore_patterns("output"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker on this 2-core box
    try:
        run_expert(load_project(alone), "low", device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    a, _ = read_lora_file(lora_path(project, "low"))
    b, _ = read_lora_file(lora_path(load_project(alone), "low"))
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), atol=1e-6, rtol=1e-5)


def test_workers_sample_at_epoch_ends_like_one_process(project_dir):
    from wanlora.report import read_scalars
    from wanlora.sampling.epoch_samples import TrainingMonitor

    config = project_dir / "wanlora.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("[sample]\n", "[sample]\nevery_n_epochs = 1\n"),
        encoding="utf-8",
    )
    project = load_project(project_dir)
    run_training(project, devices=CPU2, on_epoch_end=TrainingMonitor(project, torch.device("cpu")))
    samples = sorted(p.name for p in (project.output_dir / "samples").glob("*.png"))
    assert samples == [  # the base models once (the report grid's top row), then each expert
        "train_base_p00_seed42.png",
        "train_high_e0001_p00_seed42.png",
        "train_low_e0001_p00_seed42.png",
    ]
    for expert in ("high", "low"):
        assert read_scalars(project.output_dir / "logs" / expert)["perf/peak_rss_gib"].steps == [1]
    with pytest.raises(WanloraError, match="on_epoch_end callback cannot run in worker"):
        run_training(project, devices=CPU2, on_epoch_end=lambda *a: None, overwrite=True)


def test_data_parallel_equals_one_process_with_n_times_the_accumulation(project_dir):
    """N = 2 ranks, batch 1 each: 9 steps of 2 samples per epoch instead of 18 of 1; the
    result is the one-process run with gradient_accumulation_steps = 2 (same noise too)."""
    project = load_project(project_dir)
    reports = []
    (result,) = run_training(
        project, experts=["high"], devices=CPU2, data_parallel=2, on_step=reports.append
    )
    assert result.steps == 9 and [r.step for r in reports] == list(range(1, 10))
    assert {r.total_steps for r in reports} == {9}
    dp_state = latest_state_dir(project.output_dir, "high")
    assert read_state_meta(dp_state).finished and dp_state.name == "step-00000009"

    single = project_dir.parent / "single"
    shutil.copytree(project_dir, single, ignore=shutil.ignore_patterns("output"))
    set_training(single, "gradient_accumulation_steps", 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = run_expert(load_project(single), "high", device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert reference.steps == 9
    ref_state = latest_state_dir(load_project(single).output_dir, "high")
    # the fp32 LoRA of the final states, and the LoRA files (fp16, the DiT's dtype): equal
    # up to float rounding (bitwise on this CPU: a 2-term sum is the same in either order)
    dp_lora, _ = read_lora_file(dp_state / "lora.safetensors")
    ref_lora, _ = read_lora_file(ref_state / "lora.safetensors")
    for key in ref_lora:
        torch.testing.assert_close(dp_lora[key], ref_lora[key], atol=1e-6, rtol=1e-5)
    dp_file, dp_meta = read_lora_file(lora_path(project, "high"))
    ref_file, ref_meta = read_lora_file(lora_path(load_project(single), "high"))
    for key in ref_file:
        torch.testing.assert_close(
            dp_file[key].float(), ref_file[key].float(), atol=1e-6, rtol=1e-5
        )
    assert dp_meta["ss_steps"] == ref_meta["ss_steps"] == "9"
    assert dp_meta["ss_gradient_accumulation_steps"] == "2"
    # the random stream ended in the same place: every batch drew the noise it draws alone
    dp_trainer = read_trainer_state(dp_state)
    ref_trainer = read_trainer_state(ref_state)
    assert torch.equal(dp_trainer["generator"], ref_trainer["generator"])
    # and that one-process state resumes the data-parallel run's settings (same recipe hash)
    assert read_state_meta(dp_state).recipe_hash == read_state_meta(ref_state).recipe_hash


def test_a_failing_worker_stops_the_other_with_state_saved(project_dir, monkeypatch, capsys):
    """Corrupt low-noise DiT weights (NaN behind a valid header): low fails at its first
    step, high stops at its next step with its state saved, and `wanlora train` exits 1 with
    one line naming the problem."""
    from wanlora.cli import main

    set_training(project_dir, "max_train_epochs", 5)  # high must still be running
    dit = load_project(project_dir).root / "models"
    low_dit = next(p for p in dit.rglob("*.safetensors") if "low" in p.name.lower())
    # corrupt weights behind a valid header (the parent checks headers): all bits set = NaN
    data = bytearray(low_dit.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = b"\xff" * (len(data) - start)
    low_dit.write_bytes(bytes(data))
    monkeypatch.setattr(sys, "argv", ["wanlora", "train", str(project_dir), "--devices", "cpu,cpu"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1, errors
    assert "low:" in errors[0] and "high stopped with its state saved" in errors[0]
    project = load_project(project_dir)
    state = latest_state_dir(project.output_dir, "high")
    assert state is not None and not read_state_meta(state).finished
    assert 1 <= read_state_meta(state).step < 90
    assert not lora_path(project, "low").exists()
    assert latest_state_dir(project.output_dir, "low") is None
