"""The memory model's per-token modulation and latent-channel terms (train/speed/token_memory.py):
counted against what autograd really saves in the tiny TI2V-5B DiT, the exact formula pinned,
the I2V / TI2V shapes read from their DiT headers, and the plan for TI2V clips."""

from __future__ import annotations

import pytest
import torch

from wanlora.dataset.clips import FrameSettings
from wanlora.dataset.sources import longest_clip_frames
from wanlora.demo_ti2v import create_ti2v_demo_project
from wanlora.doctor import planned_frames
from wanlora.doctor.memory import plan_for
from wanlora.lora.inject import add_lora
from wanlora.models import load_dit
from wanlora.models.registry import resolve_model_path
from wanlora.models.tiny import TINY_DIT, write_tiny_models, write_tiny_wan22_models
from wanlora.recipes import load_recipe
from wanlora.train.setup import plan_tokens
from wanlora.train.speed.memory_plan import WAN_14B, DitShape, GiB, plan_speed, predict_peak_bytes
from wanlora.train.speed.token_memory import (
    KEPT_MODULATION_BYTES,
    KEPT_MODULATION_BYTES_COMPILED,
    SHARED_MODULATION_BYTES,
    latent_channel_bytes,
)

CUDA = torch.device("cuda")  # a label: a budget is given, so nothing asks the GPU
TI2V_5B = DitShape.wan(3072, 14336, 30, in_channels=48, out_channels=48)
TOKENS_121 = 31 * 22 * 40  # 121 frames of 1280x704: 31 latent frames of 44 x 80 / (2 x 2)


@pytest.fixture(scope="module")
def wan22(tmp_path_factory):
    return write_tiny_wan22_models(tmp_path_factory.mktemp("wan22"))


def saved_bytes(model, timestep: torch.Tensor, latents: torch.Tensor, context) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward (each held
    here until the end, so that no address is reused by a later one)."""
    storages: dict[int, torch.UntypedStorage] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(hidden_states=latents, timestep=timestep, encoder_hidden_states=context)
    return sum(storage.nbytes() for storage in storages.values())


def test_per_token_timesteps_save_what_the_model_counts(wan22):
    # the real tiny TI2V DiT with its LoRA (as training holds it), float32 on the CPU: what
    # backward keeps grows by exactly the kept blocks' modulations and the head's scale
    model, info = load_dit(wan22.ti2v, dtype=torch.float32, task="ti2v")
    add_lora(model, load_recipe("wan22-ti2v-5b").lora)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 48, 3, 4, 6, generator=generator)
    context = torch.randn(1, 512, TINY_DIT["text_dim"], generator=generator)
    tokens = 3 * 2 * 3
    scalar = saved_bytes(model, torch.tensor([500.0]), latents, context)
    per_token = saved_bytes(model, torch.full((1, tokens), 500.0), latents, context)
    dim, blocks = info.dim, info.num_layers
    head = 4  # the head's saved (1 + scale): the rest of SHARED_MODULATION_BYTES is not saved
    # ...and block 0 saves no (1 + scale) for its attention: its input needs no gradient
    # (nothing trainable before it); the model counts it (4 bytes a token: conservative)
    first = 4
    # with one timestep the same tensors have one row instead of `tokens`
    expected = (blocks * KEPT_MODULATION_BYTES + head - first) * dim * (tokens - 1)
    assert per_token - scalar == expected


def test_the_per_token_term_is_pinned():
    def peak(per_token, recompute, compiled=True):
        return predict_peak_bytes(
            TI2V_5B,
            TOKENS_121,
            fp8_storage=False,
            recompute=recompute,
            compiled=compiled,
            per_token=per_token,
        )

    dim, n = TI2V_5B.dim, TI2V_5B.num_layers
    for compiled, per_block in ((True, KEPT_MODULATION_BYTES_COMPILED), (False, KEPT_MODULATION_BYTES)):
        for recompute in (0, 12, n):
            kept = n - recompute + (recompute > 0)  # the kept blocks and the one rebuilt
            term = (SHARED_MODULATION_BYTES + kept * per_block) * dim * TOKENS_121
            assert peak(True, recompute, compiled) - peak(False, recompute, compiled) == term
    assert (KEPT_MODULATION_BYTES, KEPT_MODULATION_BYTES_COMPILED, SHARED_MODULATION_BYTES) == (
        32,
        16,
        32,
    )
    # 121 frames of 704p: a kept block's modulations are 1.25 GiB compiled (2.5 eager)
    assert KEPT_MODULATION_BYTES_COMPILED * dim * TOKENS_121 / GiB == pytest.approx(1.25, abs=0.01)


def test_latent_channels_beyond_t2v_add_their_inputs_and_targets():
    assert latent_channel_bytes(16, 16, 1000) == 0  # inside the T2V calibration
    assert latent_channel_bytes(36, 16, 1000) == 20 * 16 * 1000  # I2V: 20 more in
    assert latent_channel_bytes(48, 48, 1000) == (32 * 16 + 32 * 32) * 1000  # TI2V


def test_shapes_come_from_the_dit_headers(tmp_path, wan22):
    t2v = write_tiny_models(tmp_path / "t2v").dit_low
    dims = [TINY_DIT[k] for k in ("dim", "ffn_dim", "num_layers", "text_dim", "freq_dim")]
    for path, channels, task in (
        (t2v, (16, 16), "t2v"),
        (wan22.i2v_low, (36, 16), "i2v"),
        (wan22.ti2v, (48, 48), "ti2v"),
    ):
        shape = DitShape.from_header(path)
        assert (shape.in_channels, shape.out_channels) == channels
        assert shape.task == task
        # DitShape.wan counts diffusers' model exactly, per channel count
        in_c, out_c = channels
        assert shape == DitShape.wan(*dims, in_channels=in_c, out_channels=out_c)
    assert DitShape.wan(5120, 13824, 40) == WAN_14B
    # the full-size counts (WAN22_MODELS.md): the I2V expert's 20 more input channels,
    # TI2V-5B's 5.00B
    i2v = DitShape.wan(5120, 13824, 40, in_channels=36)
    assert i2v.weight_count - WAN_14B.weight_count == 20 * 4 * 5120
    assert TI2V_5B.weight_count == 4_999_787_712


def test_ti2v_clips_plan_for_per_token_timesteps():
    config = load_recipe("wan22-ti2v-5b").model_copy(deep=True)
    config.dataset.resolution = (1280, 704)
    assert plan_tokens(config, 121) == (TOKENS_121, True)
    assert plan_tokens(config, 1) == (880, False)  # an image: one timestep per item
    config.training.ti2v_i2v_share = 0.0
    assert plan_tokens(config, 121) == (TOKENS_121, False)  # text-to-video only
    t2v = load_recipe("wan22-t2v")
    assert plan_tokens(t2v, 81)[1] is False

    training = load_recipe("wan22-ti2v-5b").training.model_copy(update={"max_vram_gb": 141})

    def plan(per_token):
        return plan_speed(
            training, CUDA, torch.float16, tokens=TOKENS_121, shape=TI2V_5B, per_token=per_token
        )

    scalar, per_token = plan(False), plan(True)
    # the per-token modulations take room: more blocks recompute, within the same budget
    assert per_token.recompute > scalar.recompute
    assert per_token.fits and per_token.predicted_peak <= 141 * GiB


def test_doctor_plans_the_ti2v_demo_for_its_longest_clip(tmp_path):
    # the demo's videos are cut into 9-frame clips (3 latent frames): per-token timesteps
    project = create_ti2v_demo_project(tmp_path / "demo", epochs=1)
    assert planned_frames(project) == longest_clip_frames(project) == 9
    config = project.config.model_copy(deep=True)
    config.training.max_vram_gb = 8.0
    dit = resolve_model_path(config.experts["main"].dit, project.models_dir, project.root)
    shape = DitShape.from_header(dit)
    assert (shape.in_channels, shape.out_channels) == (48, 48)
    plan = plan_for(config, shape, free_bytes=None, frames=9)
    tokens = 3 * (64 // 32) * (64 // 32)  # 64x64 pixels: 2x2 tokens a latent frame
    assert plan.tokens == tokens
    expected = predict_peak_bytes(
        shape,
        tokens,
        fp8_storage=plan.fp8_storage,
        recompute=plan.recompute,
        compiled=plan.compile,
        rank=config.lora.network_dim,
        transposed=plan.fp8_transposed,
        per_token=True,
    )
    assert plan.predicted_peak == expected
    images_only = plan_for(config, shape, free_bytes=None, frames=1)
    assert images_only.tokens == 4 and images_only.predicted_peak < expected


def test_the_longest_clip_follows_the_frame_settings():
    assert FrameSettings().longest == 1  # images only
    assert FrameSettings(target_frames=(1, 33, 47)).longest == 45  # 4n+1
    assert FrameSettings(frame_extraction="full", max_frames=130).longest == 129
