"""TI2V-5B over two processes (`--devices cpu,cpu --data-parallel 2`): one model, so the two
devices train it data-parallel; the result is the one-process run with twice the accumulation
(the same checks as the T2V data-parallel test, tests/test_multi_gpu.py)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from project_edits import set_training
from wanlora.cache.build import build_cache
from wanlora.demo_ti2v import create_ti2v_demo_project
from wanlora.lora.file import read_lora_file
from wanlora.lora.keys import ALPHA, BLOCK_LINEARS, DOWN, UP, saved_module_name
from wanlora.models.tiny import TINY_DIT
from wanlora.outputs import OutputLayout, lora_path
from wanlora.recipes import load_project
from wanlora.run.experts import run_expert
from wanlora.run.records import read_record
from wanlora.run.training import run_training
from wanlora.train.state import latest_state_dir, read_state_meta, read_trainer_state

CPU2 = ["cpu", "cpu"]


@pytest.fixture
def project_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ti2v-dp") / "project"
    project = create_ti2v_demo_project(root, epochs=1)
    build_cache(project, device=torch.device("cpu"))
    return root



def test_ti2v_trains_data_parallel_like_one_process(project_dir):
    # 6 images + 3 clips (a batch each) over 2 ranks: 5 steps of 2 batches (the last of 1)
    project = load_project(project_dir)
    reports = []
    (result,) = run_training(project, devices=CPU2, data_parallel=2, on_step=reports.append)
    assert result.expert == "main" and result.steps == 5
    assert [r.step for r in reports] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(r.loss) and 0 < r.loss < 10 for r in reports)
    state = latest_state_dir(project.output_dir, "main")
    assert read_state_meta(state).finished and state.name == "step-00000005"
    record = read_record(OutputLayout(project.output_dir, {}).run_record)
    assert record.status == "finished" and record.experts["main"].status == "finished"
    assert record.experts["main"].steps == 5

    single = project_dir.parent / "single"
    shutil.copytree(project_dir, single, ignore=shutil.ignore_patterns("output"))
    set_training(single, "gradient_accumulation_steps", 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker
    try:
        reference = run_expert(load_project(single), "main", device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert reference.steps == 5
    ref_state = latest_state_dir(load_project(single).output_dir, "main")
    dp_file, dp_meta = read_lora_file(lora_path(project, "main"))
    ref_file, ref_meta = read_lora_file(reference.lora_path)
    assert set(dp_file) == set(ref_file) and dp_file
    # the reference's key names: every block linear of the tiny DiT's blocks, down/up/alpha
    expected = {
        saved_module_name(f"blocks.{i}.{linear}") + suffix
        for i in range(TINY_DIT["num_layers"])
        for linear in BLOCK_LINEARS
        for suffix in (DOWN, UP, ALPHA)
    }
    assert set(dp_file) == expected
    for key in ref_file:
        torch.testing.assert_close(
            dp_file[key].float(), ref_file[key].float(), atol=1e-6, rtol=1e-5
        )
    assert dp_meta["ss_steps"] == ref_meta["ss_steps"] == "5"
    assert dp_meta["ss_gradient_accumulation_steps"] == "2"
    # every batch drew the noise, timesteps and image-to-video choice it draws alone
    assert torch.equal(
        read_trainer_state(state)["generator"], read_trainer_state(ref_state)["generator"]
    )
