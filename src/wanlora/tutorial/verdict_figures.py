"""The verdict's words as the tutorial's "Is my LoRA working?" quotes them, from the verdict.

Each cause the verdict can name (train/verdict.py) is written here by `expert_verdict`
itself, on the wan22-t2v recipe with one setting changed to show it, so the docs never
retype a cause's wording. The one-epoch demo's weak line is rebuilt from that run's recorded
numbers (DEMO_ONE_EPOCH), in today's wording.
"""

from __future__ import annotations

from ..recipes import load_recipe
from ..train.verdict import expert_verdict

RECIPE = "wan22-t2v"
# `wanlora demo --epochs 1`: the high expert's validation, step 0 and its 18th step
DEMO_ONE_EPOCH = {"base": 2.609, "loss": 2.601, "effect": 0.0063, "steps": 18}


def _points(effect: float, steps: int, base: float = 2.609, loss: float = 2.601) -> list[dict]:
    return [
        {"step": 0, "loss": base, "effect": 0.0},
        {"step": steps, "loss": loss, "effect": effect},
    ]


def verdict_figures() -> dict[str, str]:
    """NAME -> the verdict's text the tutorial shows (figures.tutorial_figures adds them)."""
    demo = DEMO_ONE_EPOCH
    weak_points = _points(demo["effect"], demo["steps"], demo["base"], demo["loss"])
    weak = expert_verdict(load_recipe(RECIPE), "high", weak_points)
    steps_cause, lr_cause = weak.causes  # the one-epoch demo shows both

    outside = load_recipe(RECIPE)
    outside.experts["high"].min_timestep = 500
    (range_cause,) = expert_verdict(outside, "high", _points(0.05, 1800)).causes

    zero = expert_verdict(load_recipe(RECIPE), "high", _points(0.05, 1800), [0.0])
    (strengths_cause,) = zero.causes

    held = load_recipe(RECIPE)
    held.validation.items = ["img_07"]
    (held_out_cause,) = expert_verdict(held, "low", _points(0.05, 1800, 2.5, 2.55)).causes

    steady = load_recipe(RECIPE)  # nothing the run shows: a constant lr after 1800 steps
    steady.scheduler.lr_scheduler = "constant"
    no_cause = expert_verdict(steady, "high", _points(0.003, 1800)).summary
    return {
        "verdict_weak_demo": weak.text,  # the doc puts "high: " before it, as train prints
        "verdict_steps": steps_cause,
        "verdict_lr": lr_cause,
        "verdict_range": range_cause,
        "verdict_strengths": strengths_cause,
        "verdict_held_out": held_out_cause,
        "verdict_no_cause": no_cause[no_cause.index("No cause") :],
    }
