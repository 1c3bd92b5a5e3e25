"""The training loop end to end on the tiny demo models (CPU): outputs, resume, faults."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from wanlora.demo import create_demo_project
from wanlora.errors import WanloraError
from wanlora.lora.file import read_lora_file
from wanlora.lora.inject import add_lora
from wanlora.models.text_encoder import pad_context
from wanlora.outputs import lora_path
from wanlora.recipes import load_project
from wanlora.run.experts import run_expert, train_project
from wanlora.train.callbacks import StopTraining
from wanlora.train.state import latest_state_dir, read_state_meta
from wanlora.train.step import training_step
from wanlora.train.timesteps import dit_timestep, noisy_and_target, sample_timesteps

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "project"
    create_demo_project(root, epochs=1)
    return root


@pytest.fixture
def project_dir(demo_template, tmp_path):
    target = tmp_path / "project"
    shutil.copytree(demo_template, target)
    return target


def set_toml(root, extra: str):
    with open(root / "wanlora.toml", "a", encoding="utf-8") as f:
        f.write("\n" + extra + "\n")


def test_trains_both_experts_with_the_recipe_names_and_metadata(project_dir):
    project = load_project(project_dir)
    losses = []
    results = train_project(project, device=CPU, on_step=lambda r: losses.append(r))
    assert [r.expert for r in results] == ["high", "low"]
    assert [r.steps for r in results] == [18, 18]  # 18 images x 1 repeat, batch 1, 1 epoch
    assert {r.total_steps for r in losses} == {18}
    assert all(torch.isfinite(torch.tensor(r.loss)) for r in losses)
    high, meta = read_lora_file(
        project_dir / "output" / "WAN2.2-HighNoise_Demo_v1_by-wanlora.safetensors"
    )
    assert len(high) == 2 * 10 * 3  # 2 blocks x 10 linears x (down, up, alpha)
    assert {t.dtype for t in high.values()} == {torch.float16}  # the DiT file's dtype
    assert high["lora_unet_blocks_0_self_attn_q.lora_down.weight"].shape == (16, 256)
    assert meta["modelspec.title"] == "WAN2.2-HighNoise_Demo_v1_by-wanlora"
    assert meta["modelspec.author"] == "wanlora"
    assert meta["ss_network_dim"] == "16" and meta["ss_network_alpha"] == "16.0"
    assert meta["ss_min_timestep"] == "875" and meta["ss_max_timestep"] == "1000"
    assert meta["wanlora.timestep_range"] == "875-1000" and meta["wanlora.expert"] == "high"
    assert meta["ss_steps"] == "18" and len(meta["wanlora.dataset_hash"]) == 16
    _, low_meta = read_lora_file(
        project_dir / "output" / "WAN2.2-LowNoise_Demo_v1_by-wanlora.safetensors"
    )
    assert low_meta["wanlora.timestep_range"] == "0-875"
    up = high["lora_unet_blocks_0_self_attn_q.lora_up.weight"]
    assert torch.count_nonzero(up) > 0  # it trained (up starts at zero)
    assert read_state_meta(latest_state_dir(project.output_dir, "high")).finished
    assert any((project_dir / "output" / "logs" / "high").iterdir())  # tensorboard events

    # a second run finds both done and leaves the files alone
    mtime = lora_path(project, "high").stat().st_mtime_ns
    again = train_project(project, device=CPU)
    assert all(r.skipped for r in again)
    assert lora_path(project, "high").stat().st_mtime_ns == mtime


def test_existing_output_is_not_overwritten(project_dir):
    project = load_project(project_dir)
    out = lora_path(project, "low")
    out.parent.mkdir(parents=True)
    out.write_bytes(b"user file")
    with pytest.raises(WanloraError, match="already exists.*--new-run"):
        run_expert(project, "low", device=CPU)
    assert out.read_bytes() == b"user file"


def test_resume_after_interruption_gives_the_same_lora(project_dir, tmp_path):
    set_toml(project_dir, "[training]\nmax_train_epochs = 2\nsave_state_every_n_steps = 5")
    # the toml now has two [training] tables: rewrite it properly
    text = (project_dir / "wanlora.toml").read_text()
    text = text.replace("max_train_epochs = 1\n", "max_train_epochs = 2\n").replace(
        "save_state_every_n_steps = 18\n", "save_state_every_n_steps = 5\n"
    )
    text = text[: text.rindex("[training]\nmax_train_epochs = 2")]
    (project_dir / "wanlora.toml").write_text(text)
    other = tmp_path / "other"
    shutil.copytree(project_dir, other)

    uninterrupted = run_expert(load_project(project_dir), "high", device=CPU)
    assert uninterrupted.steps == 36

    def stop_at_23(report):
        if report.step == 23:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_expert(load_project(other), "high", device=CPU, on_step=stop_at_23)
    assert read_state_meta(latest_state_dir(other / "output", "high")).step == 23
    resumed = run_expert(load_project(other), "high", device=CPU)
    assert resumed.steps == 36
    a, _ = read_lora_file(uninterrupted.lora_path)
    b, _ = read_lora_file(resumed.lora_path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_a_changed_dataset(project_dir):
    project = load_project(project_dir)

    def stop(report):
        if report.step == 3:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_expert(project, "high", device=CPU, on_step=stop)
    caption = project_dir / "dataset" / "demo_00.txt"
    caption.write_text(caption.read_text() + " Changed.")
    with pytest.raises(WanloraError, match="dataset changed.*--new-run"):
        run_expert(load_project(project_dir), "high", device=CPU)
    result = run_expert(load_project(project_dir), "high", device=CPU, restart=True)
    assert result.steps == 18


def test_a_stop_saves_the_step_and_a_raw_keyboard_interrupt_saves_nothing(project_dir):
    """StopTraining (what a signal's handler raises at a step: run/signals.py) saves that
    step's state; a bare KeyboardInterrupt may come mid-step, so it saves nothing."""
    project = load_project(project_dir)

    def stop(report):
        if report.step == 4:
            raise StopTraining("stopped by SIGINT")

    with pytest.raises(StopTraining):
        run_expert(project, "low", device=CPU, on_step=stop)
    assert read_state_meta(latest_state_dir(project.output_dir, "low")).step == 4
    assert not lora_path(project, "low").exists()

    def interrupt(report):
        if report.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_expert(project, "high", device=CPU, on_step=interrupt)
    assert latest_state_dir(project.output_dir, "high") is None


def test_nan_loss_stops_with_the_step_and_keeps_no_bad_output(project_dir):
    dit = project_dir / "models"
    path = next(dit.glob("*high*.safetensors"))
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("blocks.0.ffn.2.weight"))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(path))
    with pytest.raises(WanloraError, match=r"loss became nan at step 1 .*resume"):
        run_expert(load_project(project_dir), "high", device=CPU)
    assert not lora_path(load_project(project_dir), "high").exists()


def test_one_step_is_the_reference_loss(project_dir):
    """loss = MSE(DiT(noisy, 1000 t + 1, context padded to 512), noise - latents) in float32."""
    from wanlora.cache.build import build_cache, load_cached_tensors
    from wanlora.models import load_dit

    project = load_project(project_dir)
    config = project.config
    expert = config.experts["high"]
    samples = load_cached_tensors(build_cache(project, device=CPU).entries)
    model, _ = load_dit(project_dir / expert.dit, dtype=torch.float32)
    add_lora(model, config.lora)  # zero-initialised up: the output is the base model's
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = training_step(
        model,
        samples,
        [3],
        config,
        expert,
        torch.Generator().manual_seed(7),
        CPU,
        torch.float32,
        scaler,
    )
    g = torch.Generator().manual_seed(7)
    latents = samples[3][0].float()[None]
    noise = torch.randn(latents.shape, generator=g)
    t = sample_timesteps(1, config.timesteps, 875, 1000, generator=g)
    assert 0.875 <= t.item() <= 1.0
    noisy, target = noisy_and_target(latents, noise, t)
    torch.testing.assert_close(target, noise - latents)
    context = pad_context(samples[3][1].float())
    assert context.shape[0] == 512 and torch.count_nonzero(context[samples[3][1].shape[0] :]) == 0
    with torch.no_grad():
        pred = model(
            noisy, timestep=dit_timestep(t), encoder_hidden_states=context[None], return_dict=False
        )[0]
    assert dit_timestep(t).item() == pytest.approx(1000 * t.item() + 1)
    assert loss == pytest.approx(F.mse_loss(pred.float(), target).item(), rel=1e-5)


def test_steps_follow_dataset_size_and_repeats(project_dir):
    text = (
        (project_dir / "wanlora.toml")
        .read_text()
        .replace(
            "[dataset]\nresolution = [64, 64]", "[dataset]\nresolution = [64, 64]\nnum_repeats = 2"
        )
    )
    (project_dir / "wanlora.toml").write_text(text)
    reports = []

    def stop(report):
        reports.append(report)
        raise StopTraining

    with pytest.raises(StopTraining):
        run_expert(load_project(project_dir), "low", device=CPU, on_step=stop)
    assert reports[0].total_steps == 36  # 18 images x 2 repeats


def test_out_of_memory_is_one_line_with_what_to_do(project_dir):
    def oom(report):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(
        WanloraError,
        match=r"high: out of GPU memory after 1 completed step \(CUDA out of memory\. Tried to "
        r"allocate 2\.00 GiB\) -- close other programs that use "
        r"the GPU \(`nvidia-smi` lists them\), or pass --max-vram N",
    ):
        run_expert(load_project(project_dir), "high", device=CPU, on_step=oom)
