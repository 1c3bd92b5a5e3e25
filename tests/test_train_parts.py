"""The engine's named parts, each on its own (CPU, the tiny DiT written to disk in Wan's layout):
the parallel strategies, one step's inputs / loss / updates, the setup, saving, callbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wanlora.demo import create_demo_project
from wanlora.errors import WanloraError
from wanlora.lora.file import read_lora_file
from wanlora.lora.inject import add_lora, lora_parameters
from wanlora.models.dit import load_dit
from wanlora.train.callbacks import StepReport, chain
from wanlora.train.checkpoint import Checkpointer
from wanlora.train.data import TrainingData
from wanlora.train.data_parallel import DataParallel
from wanlora.train.failures import check_finite
from wanlora.train.schedule import make_scheduler
from wanlora.train.setup import (
    graphed_step,
    load_expert_model,
    make_grad_scaler,
    make_optimizer,
    start_state,
)
from wanlora.train.state import TrainingParts, latest_state_dir, read_state_meta
from wanlora.train.step import (
    Stepper,
    draws,
    model_inputs,
    optimizer_step,
    prediction_loss,
    training_step,
)
from wanlora.train.strategy import SingleProcess
from wanlora.train.timesteps import dit_timestep, noisy_and_target

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The demo project: its tiny fp16 DiT files, its config (no cache built)."""
    return create_demo_project(tmp_path_factory.mktemp("parts") / "project", epochs=1)


@pytest.fixture
def samples():
    """Three (latent, text embedding) pairs shaped like the demo cache's."""
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(16, 1, 8, 8, generator=g), torch.randn(n, 64, generator=g)) for n in (5, 9, 3)
    ]


def float_model(project):
    model, _ = load_dit(project.root / project.config.experts["high"].dit, dtype=torch.float32)
    torch.manual_seed(0)
    add_lora(model, project.config.lora)
    return model


# --- strategies ------------------------------------------------------------------------------


def test_single_process_owns_every_batch_and_reduces_nothing(project):
    one = SingleProcess()
    assert all(one.owns(b) for b in range(50))
    assert one.world == 1 and one.writes_files
    assert one.effective_config(project.config) is project.config
    assert one.reduce(0.25, stepped=True, params=[]) == 0.25  # the micro-batch's own loss
    assert one.reduce(None, stepped=False, params=[]) is None
    one.barrier()
    assert not one.should_stop()
    stop = []
    asked = SingleProcess(stop_check=lambda: bool(stop))
    assert not asked.should_stop()
    stop.append(True)
    assert asked.should_stop()


def test_data_parallel_ranks_share_out_the_batches_and_rank_0_writes():
    ranks = [DataParallel(r, 3) for r in range(3)]
    assert [dp.writes_files for dp in ranks] == [True, False, False]
    for b in range(12):  # each batch is exactly one rank's
        assert sum(dp.owns(b) for dp in ranks) == 1
    assert not ranks[1].should_stop()
    ranks[1].stop_requested = True  # what the step's all_reduce agreed
    assert ranks[1].should_stop()


# --- one step --------------------------------------------------------------------------------


def test_draws_are_noise_then_timesteps_from_the_experts_range(project, samples):
    config = project.config
    settings = config.experts["low"]
    noise, t = draws(samples, [0, 1], config, settings, torch.Generator().manual_seed(3))
    assert noise.shape == (2, 16, 1, 8, 8)
    assert torch.all((t >= 0) & (t <= 0.875))
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(noise, torch.randn(noise.shape, generator=g))  # noise first


def test_model_inputs_are_the_flow_matching_pair_with_padded_text(project, samples):
    config = project.config
    settings = config.experts["high"]
    inputs = model_inputs(samples, [2], config, settings, torch.Generator().manual_seed(4), CPU)
    noise, t = draws(samples, [2], config, settings, torch.Generator().manual_seed(4))
    latents = samples[2][0][None]
    noisy, target = noisy_and_target(latents, noise, t)
    torch.testing.assert_close(inputs.noisy, noisy)
    torch.testing.assert_close(inputs.target, noise - latents)
    torch.testing.assert_close(inputs.t, t)
    assert inputs.context.shape == (1, 512, 64)
    torch.testing.assert_close(inputs.context[0, :3], samples[2][1])
    assert torch.count_nonzero(inputs.context[0, 3:]) == 0


def test_prediction_loss_is_the_mse_of_the_dit_against_the_target(project, samples):
    model = float_model(project)
    config = project.config
    inputs = model_inputs(
        samples, [0, 1], config, config.experts["high"], torch.Generator().manual_seed(5), CPU
    )
    loss = prediction_loss(model, *inputs, torch.float32)
    with torch.no_grad():
        prediction = model(
            inputs.noisy,
            timestep=dit_timestep(inputs.t),
            encoder_hidden_states=inputs.context,
            return_dict=False,
        )[0]
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(F.mse_loss(prediction, inputs.target).item(), rel=1e-6)


def test_training_step_accumulates_gradients_scaled_by_the_accumulation(project, samples):
    config = project.config.model_copy(deep=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    grads = []
    for accumulation in (1, 4):
        config.training.gradient_accumulation_steps = accumulation
        model = float_model(project)
        args = (samples, [1], config, config.experts["high"], torch.Generator().manual_seed(6))
        training_step(model, *args, CPU, torch.float32, scaler)
        grads.append(torch.cat([p.grad.flatten() for p in lora_parameters(model)]))
    torch.testing.assert_close(grads[1] * 4, grads[0])


def test_optimizer_step_clips_only_when_max_grad_norm_is_set():
    for max_norm, expect in ((0.0, 10.0), (1.0, 1.0)):
        param = torch.nn.Parameter(torch.zeros(4))
        optimizer = torch.optim.SGD([param], lr=1.0)
        param.grad = torch.full((4,), 5.0)  # norm 10
        optimizer_step(optimizer, torch.amp.GradScaler("cpu", enabled=False), [param], max_norm)
        assert param.norm().item() == pytest.approx(expect, rel=1e-5)  # SGD: param = -grad
        assert param.grad is None  # zeroed for the next step


def test_stepper_takes_another_ranks_draws_without_training(project, samples):
    model = float_model(project)
    optimizer = make_optimizer(model, project.config.optimizer, CPU)
    parts = TrainingParts(
        model,
        optimizer,
        make_scheduler(optimizer, project.config.scheduler, 10),
        torch.amp.GradScaler("cpu", enabled=False),
        torch.Generator().manual_seed(7),
    )
    stepper = Stepper(parts, samples, project.config, "high", CPU, torch.float32)
    assert stepper.micro_batch([0], owned=False) is None
    assert all(p.grad is None for p in stepper.params)
    reference = torch.Generator().manual_seed(7)
    draws(samples, [0], project.config, project.config.experts["high"], reference)
    assert torch.equal(parts.generator.get_state(), reference.get_state())
    loss = stepper.micro_batch([1])
    assert loss > 0 and all(p.grad is not None for p in stepper.params)
    stepper.optimizer_step()
    assert all(p.grad is None for p in stepper.params)


# --- setup -----------------------------------------------------------------------------------


def test_setup_builds_the_lora_model_and_one_adamw_group_over_the_lora(project):
    model, dtype = load_expert_model(project, "high", project.config, CPU)
    assert dtype == torch.float16  # the demo DiT file's dtype decides
    assert model.training
    params = lora_parameters(model)
    assert len(params) == 2 * 10 * 2  # 2 blocks x 10 linears x (down, up)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in params}
    settings = project.config.optimizer
    optimizer = make_optimizer(model, settings, CPU)
    (group,) = optimizer.param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in params]
    assert group["lr"] == settings.learning_rate and tuple(group["betas"]) == tuple(settings.betas)
    assert group["eps"] == settings.eps and group["weight_decay"] == settings.weight_decay


def test_no_cuda_graph_off_the_gpu_and_the_optimiser_stays_plain(project):
    model = float_model(project)
    model.wanlora_checkpointed = []
    optimizer = make_optimizer(model, project.config.optimizer, CPU)
    parts = TrainingParts(
        model,
        optimizer,
        make_scheduler(optimizer, project.config.scheduler, 10),
        make_grad_scaler(CPU, torch.float32),
        torch.Generator(),
    )
    assert graphed_step(parts, project.config, CPU, torch.float32, ranks=1, expert="high") is None
    assert all(not g["capturable"] and isinstance(g["lr"], float) for g in optimizer.param_groups)


def test_setup_names_a_missing_dit_file(project):
    config = project.config.model_copy(deep=True)
    config.experts["high"].dit = "models/nowhere.safetensors"
    with pytest.raises(WanloraError, match="nowhere.safetensors: DiT file for the high expert"):
        load_expert_model(project, "high", config, CPU)


def test_grad_scaler_has_its_fp16_scale_before_any_loss():
    scaler = make_grad_scaler(CPU, torch.float16)
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**16
    assert not make_grad_scaler(CPU, torch.bfloat16).is_enabled()


def test_start_state_is_step_0_or_the_checked_resume_state(project, tmp_path):
    model = float_model(project)
    optimizer = make_optimizer(model, project.config.optimizer, CPU)
    scheduler = make_scheduler(optimizer, project.config.scheduler, 10)
    parts = TrainingParts(
        model, optimizer, scheduler, make_grad_scaler(CPU, torch.float32), torch.Generator()
    )
    fresh = start_state(None, parts, "data", "recipe", "high", 10)
    assert (fresh.step, fresh.epoch, fresh.batch_in_epoch, fresh.finished) == (0, 0, 0, False)
    fresh.step = 3
    Checkpointer(tmp_path, "high", parts, alpha=16.0).save(fresh, finished=False)
    saved = latest_state_dir(tmp_path, "high")
    assert start_state(saved, parts, "data", "recipe", "high", 10).step == 3
    with pytest.raises(WanloraError, match="the dataset changed"):
        start_state(saved, parts, "other data", "recipe", "high", 10)
    with pytest.raises(WanloraError, match="the training settings changed"):
        start_state(saved, parts, "data", "other recipe", "high", 10)


# --- saving, callbacks, data -----------------------------------------------------------------


def test_only_the_writing_process_saves(project, tmp_path):
    model = float_model(project)
    optimizer = make_optimizer(model, project.config.optimizer, CPU)
    parts = TrainingParts(
        model,
        optimizer,
        make_scheduler(optimizer, project.config.scheduler, 10),
        make_grad_scaler(CPU, torch.float32),
        torch.Generator(),
    )
    state = start_state(None, parts, "data", "recipe", "high", 10)
    lora = tmp_path / "out" / "high.safetensors"
    quiet = Checkpointer(tmp_path / "out", "high", parts, alpha=16.0, writes=False)
    quiet.finish(state, lora, torch.float16, {"modelspec.title": "x"})
    assert not (tmp_path / "out").exists() and not state.finished
    writer = Checkpointer(tmp_path / "out", "high", parts, alpha=16.0)
    writer.finish(state, lora, torch.float16, {"modelspec.title": "x"})
    assert read_state_meta(latest_state_dir(tmp_path / "out", "high")).finished
    tensors, metadata = read_lora_file(lora)
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    assert metadata["modelspec.title"] == "x"
    writer.clear()
    assert latest_state_dir(tmp_path / "out", "high") is None


def test_a_non_finite_loss_stops_before_the_optimiser_step():
    check_finite(0.5, "high", 3)
    check_finite(None, "high", 3)  # another rank's micro-batch
    for bad in (float("nan"), float("inf")):
        with pytest.raises(WanloraError, match=f"high: the loss became {bad} at step 3"):
            check_finite(bad, "high", 3)


def test_chain_calls_every_callback_in_order():
    seen = []
    assert chain(None, None) is None
    only = seen.append
    assert chain(None, only) is only
    both = chain(lambda r: seen.append(("first", r.step)), None, lambda r: seen.append(r.step))
    both(StepReport("high", 7, 9, 0.1, 1e-4, 0.5))
    assert seen == [("first", 7), 7]


def test_total_steps_count_every_epochs_micro_batches_over_the_accumulation(project):
    from wanlora.dataset.items import load_items

    items = load_items(project)  # 18 images, batch 1
    data = TrainingData(items, [], "hash")
    config = project.config.model_copy(deep=True)
    config.training.max_train_epochs = 3
    assert data.total_steps(config) == 54
    config.training.gradient_accumulation_steps = 4
    assert data.total_steps(config) == 14  # ceil(54 / 4): the last step takes the rest
