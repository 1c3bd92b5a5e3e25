"""TI2V-5B's validation holds both halves of its training: text-to-video pairs and, for
clips, image-to-video pairs made as training makes them (train/ti2v.py), on the tiny 5B DiT."""

from __future__ import annotations

import pytest
import torch

from wanlora.models.dit import load_dit
from wanlora.models.text_encoder import pad_context
from wanlora.models.tiny import TINY_DIT, write_tiny_wan22_models
from wanlora.recipes import load_recipe
from wanlora.train.ti2v import frame_weights, prediction_loss, token_timesteps
from wanlora.train.timesteps import dit_timestep
from wanlora.train.validation import Validator, build_validation_set, spread_share

CPU = torch.device("cpu")


def test_spread_share():
    assert spread_share(6, 0.5) == [False, True] * 3
    assert spread_share(4, 0.0) == [False] * 4 and spread_share(3, 1.0) == [True] * 3
    assert sum(spread_share(10, 0.3)) == 3


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    path = write_tiny_wan22_models(tmp_path_factory.mktemp("ti2v")).ti2v
    return load_dit(path, dtype=torch.float32, task="ti2v")[0]


def samples() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two clips (3 latent frames) and an image (1 frame), 48 channels as the Wan 2.2 VAE's."""
    g = torch.Generator().manual_seed(3)
    clip = [torch.randn(48, 3, 4, 4, generator=g) for _ in range(2)]
    image = torch.randn(48, 1, 4, 4, generator=g)
    return [(x, torch.randn(5, TINY_DIT["text_dim"], generator=g)) for x in (*clip, image)]


def test_clips_validate_half_image_to_video_as_training_makes_them(dit):
    config = load_recipe("wan22-ti2v-5b")
    share = config.training.ti2v_i2v_share
    vset = build_validation_set(samples(), config.experts["main"], 4, seed=1, i2v_share=share)
    # pairs: items 0 1 2 0 at the 4 timesteps; every second pair image-to-video, but the image
    assert vset.pairs == [(0, 0), (1, 1), (2, 2), (0, 3)]
    assert vset.clean_first == [False, True, False, True]
    t2v = build_validation_set(samples(), config.experts["main"], 4, seed=1)  # share 0
    assert t2v.clean_first == [] and not t2v.image_to_video(1)

    validator = Validator(vset, CPU, torch.float32)
    noisy, timestep, context, target, weights = validator.inputs(1)
    latent = vset.samples[1][0][None]
    assert torch.equal(noisy[:, :, 0], latent[:, :, 0])  # the image's latent, clean
    tokens_per_frame = 4 * 4 // 4  # the (1, 2, 2) patch grid
    assert timestep.shape == (1, 3 * tokens_per_frame)
    assert (timestep[0, :tokens_per_frame] == 0).all() and (timestep[0, tokens_per_frame:] > 0).all()
    assert weights.flatten().tolist() == [0.0, 1.0, 1.0]  # frame 0 out of the loss

    # the base model's loss is training's own loss function on the same inputs, pair by pair
    losses = []
    for k, (item, step) in enumerate(vset.pairs):
        x, text = (s[None] if s.dim() == 4 else s for s in vset.samples[item])
        t = torch.tensor([vset.timesteps[step] / 1000.0])
        noise = vset.noise[k]
        manual = (1 - t) * x + t * noise
        clean = torch.tensor([vset.clean_first[k]])
        ts = dit_timestep(t)
        if clean.item():
            manual[:, :, 0] = x[:, :, 0]
            ts = token_timesteps(ts, clean, tuple(x.shape[2:]))
        weights = frame_weights(clean, x.shape[2], config.training.ti2v_mask_first_frame)
        context = pad_context(text).float()[None]
        with torch.no_grad():
            loss = prediction_loss(dit, manual, ts, context, noise - x, weights, torch.float32)
        losses.append(loss.item())
    base = validator.base_point(dit)
    assert base.loss == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert validator.point(dit).effect == 0.0  # no LoRA: the prediction is the base model's
