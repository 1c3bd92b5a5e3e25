"""I2V-A14B training on the tiny demo (CPU): the 36-channel step, resume, expert-parallel and
data-parallel workers (`--devices cpu,cpu`), and ComfyUI's keys on the full-size layout."""

from __future__ import annotations

import json
import shutil
from importlib import resources

import pytest
import torch
from diffusers import WanTransformer3DModel

from project_edits import set_training
from wanlora.cache.build import build_cache
from wanlora.demo_i2v import I2V_START_IMAGE, create_i2v_demo_project
from wanlora.lora.file import read_lora_file
from wanlora.lora.inject import lora_target_modules
from wanlora.lora.keys import saved_module_name
from wanlora.models.assign import build_on_meta
from wanlora.outputs import lora_path
from wanlora.recipes import load_project
from wanlora.run.experts import run_expert
from wanlora.run.training import run_training
from wanlora.sampling.epoch_samples import TrainingMonitor
from wanlora.sampling.files import read_png_info, video_of
from wanlora.train.callbacks import StopTraining
from wanlora.train.state import latest_state_dir, read_state_meta

CPU = torch.device("cpu")
CPU2 = ["cpu", "cpu"]
LAYOUT = resources.files("wanlora.models").joinpath("layouts/dit_wan22_i2v_a14b_expert.json")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("i2v-train") / "project"
    project = create_i2v_demo_project(root, epochs=1)
    build_cache(project, device=CPU)
    return root


@pytest.fixture
def project_dir(template, tmp_path):
    shutil.copytree(template, tmp_path / "project")
    return tmp_path / "project"



def test_the_expert_sees_36_channels_learns_and_samples_from_the_image(project_dir):
    config = project_dir / "wanlora.toml"
    config.write_text(config.read_text().replace("[sample]\n", "[sample]\nevery_n_epochs = 1\n"))
    project = load_project(project_dir)
    monitor = TrainingMonitor(project, CPU)
    seen = []

    def record(module, args):  # every patch embedding any model runs (no VAE runs here)
        if isinstance(module, torch.nn.Conv3d) and module.kernel_size == (1, 2, 2):
            seen.append(args[0].shape[1])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        result = run_expert(project, "high", device=CPU, on_epoch_end=monitor)
    finally:
        handle.remove()
        monitor.close()
    assert result.steps == 8 and seen and set(seen) == {36}  # training and the epoch's sample
    # the epoch-end sample: a video from [sample] image, its MP4 beside its first frame's PNG
    (png,) = monitor.saved
    assert png.name == "train_high_e0001_p00_seed42.png"
    info = read_png_info(png)
    assert info["image"] == I2V_START_IMAGE and info["frames"] == 5
    assert video_of(png, info).stat().st_size > 0
    tensors, meta = read_lora_file(result.lora_path)
    assert meta["modelspec.architecture"] == "wan2.2_i2v_a14b/lora"
    assert meta["wanlora.timestep_range"] == "900-1000"
    assert torch.count_nonzero(tensors["lora_unet_blocks_0_self_attn_q.lora_up.weight"]) > 0


def test_resume_gives_the_same_lora(project_dir, tmp_path):
    set_training(project_dir, "save_state_every_n_steps", 3)
    other = tmp_path / "other"
    shutil.copytree(project_dir, other)
    whole = run_expert(load_project(project_dir), "low", device=CPU)

    def stop_at_5(report):
        if report.step == 5:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_expert(load_project(other), "low", device=CPU, on_step=stop_at_5)
    assert read_state_meta(latest_state_dir(other / "output", "low")).step == 5
    resumed = run_expert(load_project(other), "low", device=CPU)
    assert resumed.steps == whole.steps == 8
    a, _ = read_lora_file(whole.lora_path)
    b, _ = read_lora_file(resumed.lora_path)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_expert_parallel_and_data_parallel_workers(project_dir, tmp_path):
    project = load_project(project_dir)
    results = run_training(project, devices=CPU2)  # the two experts side by side
    assert [(r.expert, r.steps) for r in results] == [("high", 8), ("low", 8)]
    for expert in ("high", "low"):
        assert read_lora_file(lora_path(project, expert))[1]["ss_steps"] == "8"

    dp = tmp_path / "dp"
    shutil.copytree(project_dir, dp, ignore=shutil.ignore_patterns("output"))
    (result,) = run_training(load_project(dp), experts=["high"], devices=CPU2, data_parallel=2)
    assert result.steps == 4  # 8 clips, 2 ranks of batch 1: 4 steps of 2
    single = tmp_path / "single"
    shutil.copytree(dp, single, ignore=shutil.ignore_patterns("output"))
    set_training(single, "gradient_accumulation_steps", 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker
    try:
        reference = run_expert(load_project(single), "high", device=CPU)
    finally:
        torch.set_num_threads(threads)
    a, _ = read_lora_file(lora_path(load_project(dp), "high"))
    b, _ = read_lora_file(reference.lora_path)
    for key in b:
        torch.testing.assert_close(a[key].float(), b[key].float(), atol=1e-6, rtol=1e-5)


def test_comfyui_maps_every_lora_module_onto_the_full_size_i2v_layout():
    """ComfyUI loads the DiT with a `diffusion_model.` prefix and reaches each of its
    `<path>.weight` as `lora_unet_<path with _>`: our 400 I2V modules all land, shapes equal."""
    layout = json.loads(LAYOUT.read_text())["tensors"]
    key_map = {
        "lora_unet_" + k[: -len(".weight")].replace(".", "_"): k
        for k in layout
        if k.endswith(".weight")
    }
    model = build_on_meta(
        lambda: WanTransformer3DModel(
            num_attention_heads=40,
            attention_head_dim=128,
            in_channels=36,
            out_channels=16,
            ffn_dim=13824,
            num_layers=40,
            text_dim=4096,
        )
    )
    assert tuple(model.patch_embedding.weight.shape) == tuple(layout["patch_embedding.weight"])
    targets = lora_target_modules(model)
    assert len(targets) == 400
    for name in targets:
        stem = saved_module_name(name)
        assert stem in key_map, stem
        module = model.get_submodule(name)
        assert (module.out_features, module.in_features) == tuple(layout[key_map[stem]])
