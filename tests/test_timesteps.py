"""Timestep sampling, the DiT's timestep and the flow-matching pair (TRAINER_SPEC.md 5)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cli_run import run_cli
from wanlora.recipes import load_recipe
from wanlora.recipes.schema import TimestepSettings
from wanlora.train.timesteps import (
    dit_timestep,
    draw_timesteps,
    noisy_and_target,
    sample_timesteps,
    summarize_timesteps,
)

N = 200_000
QS = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
STANDARD_NORMAL = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)


def wan22_settings() -> TimestepSettings:
    return load_recipe("wan22-t2v").timesteps


def sample(settings, lo, hi, n=N, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return sample_timesteps(n, settings, lo, hi, generator=generator).double()


def truncated_logit_normal_quantile(q: float, t_min: float, t_max: float) -> float:
    """Exact quantile of sigmoid(z), z ~ N(0, 1), truncated to [t_min, t_max]."""
    logit = lambda t: math.log(t / (1 - t)) if 0 < t < 1 else math.copysign(math.inf, t - 0.5)  # noqa: E731
    lo, hi = (
        STANDARD_NORMAL.cdf(torch.tensor(logit(x), dtype=torch.float64)) for x in (t_min, t_max)
    )
    z = STANDARD_NORMAL.icdf(lo + q * (hi - lo))
    return float(torch.sigmoid(z))


# The reference's measured quantiles (TRAINER_SPEC 5). They come from a finite sample, so the
# tolerance covers that sample's noise (low expert: ~0.003 from the exact values) and ours.
@pytest.mark.parametrize(
    ("expert", "lo", "hi", "measured", "measured_mean", "tol"),
    [
        ("high", 875, 1000, (0.8774, 0.9024, 0.9535), 0.9073, 0.002),
        ("low", 0, 875, (0.1629, 0.4908, 0.8104), 0.4893, 0.006),
    ],
)
def test_recipe_distribution_matches_measured_quantiles(
    expert, lo, hi, measured, measured_mean, tol
):
    recipe = load_recipe("wan22-t2v")
    assert (recipe.experts[expert].min_timestep, recipe.experts[expert].max_timestep) == (lo, hi)
    t = sample(recipe.timesteps, lo, hi)
    assert t.shape == (N,)
    assert lo / 1000 <= t.min() and t.max() <= hi / 1000
    for got, want in zip(t.quantile(QS).tolist(), measured, strict=True):
        assert got == pytest.approx(want, abs=tol)
    assert float(t.mean()) == pytest.approx(measured_mean, abs=tol)


@pytest.mark.parametrize(("lo", "hi"), [(875, 1000), (0, 875)])
def test_rejection_keeps_the_logit_normal_shape(lo, hi):
    """preserve_distribution_shape = the logit-normal truncated to the range, exactly."""
    t = sample(wan22_settings(), lo, hi, seed=1)
    for q, got in zip(QS.tolist(), t.quantile(QS).tolist(), strict=True):
        assert got == pytest.approx(
            truncated_logit_normal_quantile(q, lo / 1000, hi / 1000), abs=2e-3
        )


def test_output_is_float32_batch_shaped():
    t = sample_timesteps(4, wan22_settings(), 875, 1000)
    assert t.dtype == torch.float32 and t.shape == (4,)
    assert ((t >= 0.875) & (t <= 1.0)).all()


def test_same_generator_seed_same_timesteps():
    a = sample(wan22_settings(), 0, 875, n=16, seed=5)
    b = sample(wan22_settings(), 0, 875, n=16, seed=5)
    assert torch.equal(a, b)


def test_without_preserve_shape_t_is_squeezed_linearly():
    settings = wan22_settings().model_copy(update={"preserve_distribution_shape": False})
    squeezed = sample(settings, 875, 1000, n=1000, seed=3)
    unrestricted = draw_timesteps(1000, settings, torch.Generator().manual_seed(3)).double()
    expected = unrestricted * (1.0 - 0.875) + 0.875
    torch.testing.assert_close(squeezed, expected, rtol=0, atol=1e-6)


def test_full_range_is_not_touched():
    settings = wan22_settings()
    full = sample(settings, 0, 1000, n=1000, seed=4)
    unrestricted = draw_timesteps(1000, settings, torch.Generator().manual_seed(4)).double()
    assert torch.equal(full, unrestricted)


def test_shift_formula():
    settings = TimestepSettings(
        timestep_sampling="shift", discrete_flow_shift=3.0, sigmoid_scale=1.5
    )
    z = torch.randn(8, generator=torch.Generator().manual_seed(7))
    base = torch.sigmoid(1.5 * z)
    expected = base * 3.0 / (1 + 2.0 * base)
    got = draw_timesteps(8, settings, torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, expected)


def test_sigmoid_ignores_shift_and_uniform_is_uniform():
    z = torch.randn(8, generator=torch.Generator().manual_seed(8))
    sigmoid = TimestepSettings(timestep_sampling="sigmoid", discrete_flow_shift=3.0)
    torch.testing.assert_close(
        draw_timesteps(8, sigmoid, torch.Generator().manual_seed(8)), torch.sigmoid(z)
    )
    uniform = TimestepSettings(timestep_sampling="uniform")
    t = draw_timesteps(N, uniform, torch.Generator().manual_seed(9)).double()
    assert float(t.mean()) == pytest.approx(0.5, abs=3e-3)
    assert t.quantile(QS).tolist() == pytest.approx([0.05, 0.5, 0.95], abs=3e-3)


def test_impossible_range_is_clamped_after_max_rounds(monkeypatch):
    import wanlora.train.timesteps as timesteps

    monkeypatch.setattr(timesteps, "MAX_REJECTION_ROUNDS", 2)
    # sigmoid(z) > 0.999 needs z > 6.9: practically never within 2 rounds
    t = sample_timesteps(64, wan22_settings(), 999, 1000, torch.Generator().manual_seed(0))
    assert t.shape == (64,)
    assert ((t >= 0.999) & (t <= 1.0)).all()


def test_dit_timestep_is_1000t_plus_1():
    t = torch.tensor([0.0, 0.875, 1.0])
    assert dit_timestep(t).tolist() == [1.0, 876.0, 1001.0]


def test_noisy_and_target_broadcast_over_video_latents():
    latents = torch.randn(2, 16, 1, 4, 6)
    noise = torch.randn(2, 16, 1, 4, 6)
    t = torch.tensor([0.0, 1.0])
    noisy, target = noisy_and_target(latents, noise, t)
    assert noisy.shape == latents.shape
    torch.testing.assert_close(noisy[0], latents[0])  # t = 0: clean
    torch.testing.assert_close(noisy[1], noise[1])  # t = 1: pure noise
    torch.testing.assert_close(target, noise - latents)
    noisy, _ = noisy_and_target(latents, noise, torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(noisy[1], 0.5 * latents[1] + 0.5 * noise[1])


def test_inspect_timesteps_json_through_the_cli():
    r = run_cli(
        "inspect", "timesteps", "--recipe", "wan22-t2v", "--expert", "high", "--json", "-n", "50000"
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"expert", "n", "quantiles", "mean"}
    assert data["expert"] == "high" and data["n"] == 50000
    assert list(data["quantiles"]) == [
        "0.01",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "0.75",
        "0.9",
        "0.95",
        "0.99",
    ]
    assert data["quantiles"]["0.5"] == pytest.approx(0.9024, abs=3e-3)
    assert data["mean"] == pytest.approx(0.9073, abs=3e-3)


def test_inspect_timesteps_terminal_and_unknown_expert():
    from typer.testing import CliRunner

    from wanlora.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["inspect", "timesteps", "--expert", "low", "-n", "2000", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "0.000-0.044" in r.output and "█" in r.output  # histogram over 0..0.875
    assert "0.95" in r.output and "mean" in r.output
    r = runner.invoke(app, ["inspect", "timesteps", "--expert", "medium"])
    assert r.exit_code != 0 and "unknown expert" in str(r.exception)


def test_summarize_timesteps_keys_and_values():
    summary = summarize_timesteps(torch.linspace(0, 1, 1001))
    assert summary["quantiles"]["0.25"] == pytest.approx(0.25)
    assert summary["mean"] == pytest.approx(0.5)
