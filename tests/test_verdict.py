"""The end-of-training verdict (train/verdict.py): each cause fires when the run shows it and
not otherwise; the wording per task (two experts T2V/I2V, one model TI2V-5B / Wan 2.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wanlora.recipes import load_recipe
from wanlora.report.figures import panel_title
from wanlora.train.verdict import (
    expert_verdict,
    inference_ranges,
    lr_cause,
    range_cause,
    strengths_cause,
    training_sample_strengths,
)
from wanlora.tutorial.verdict_figures import verdict_figures


def points(effect: float, steps: int, base_loss: float = 0.5, loss: float = 0.49) -> list[dict]:
    common = {"expert": "high", "timesteps": [891, 922, 953, 984], "items": 18, "seconds": 1.0}
    return [
        {**common, "step": 0, "epoch": 0, "loss": base_loss, "effect": 0.0},
        {**common, "step": steps, "epoch": 100, "loss": loss, "effect": effect},
    ]


def test_too_few_steps_only_for_a_weak_lora_under_300_steps():
    config = load_recipe("wan22-t2v")
    assert expert_verdict(config, "high", points(0.003, 54)).causes[0] == (
        "only 54 optimiser steps (try more [training] max_train_epochs)"
    )
    assert not any(
        "optimiser steps" in c for c in expert_verdict(config, "high", points(0.003, 300)).causes
    )
    assert (
        expert_verdict(config, "high", points(0.05, 54)).causes == []
    )  # clear: nothing to explain


def test_learning_rate_decay_fires_for_an_early_decay_and_not_for_warmup():
    config = load_recipe("wan22-t2v")  # polynomial, power 8: below 10% after a quarter
    why, fix = lr_cause(config, 1800)
    assert why == (
        "the learning rate is below 10% of 0.0003 from step 451 of 1800 on (polynomial, "
        "power 8): the last 75% of the steps barely move the LoRA"
    )
    assert "lr_scheduler_power" in fix and "learning_rate" in fix
    config.scheduler.lr_scheduler_power = 1.0  # linear: below 10% only in the last 10%
    assert lr_cause(config, 1800) is None
    config.scheduler.lr_scheduler = "constant"
    assert lr_cause(config, 1800) is None
    config.scheduler.lr_warmup_steps = 100  # rising from 0 is not a decay
    assert lr_cause(config, 1800) is None
    config.scheduler.lr_scheduler = "cosine"  # cosine: below 10% in the last ~20%
    assert lr_cause(config, 1800) is None
    weak = expert_verdict(config, "high", points(0.003, 1800))
    assert weak.causes == [] and "No cause shows in the run's settings" in weak.text


def test_range_cause_t2v_i2v_ti2v():
    t2v, i2v, ti2v = (load_recipe(r) for r in ("wan22-t2v", "wan22-i2v", "wan22-ti2v-5b"))
    assert inference_ranges(t2v) == {"high": (875, 1000), "low": (0, 875)}
    assert inference_ranges(i2v) == {"high": (900, 1000), "low": (0, 900)}  # boundary 0.900
    assert inference_ranges(ti2v) == {"main": (0, 1000)}
    for config in (t2v, i2v, ti2v):  # the recipes train where their experts run
        for expert in config.experts:
            assert range_cause(config, expert) is None, (config.recipe, expert)

    # I2V trained with T2V's boundary (875): the high expert trains 25 timesteps it never
    # runs at; the low one misses 875-900 of its 900, within the tolerance
    i2v.experts["high"].min_timestep = i2v.experts["low"].max_timestep = 875
    assert range_cause(i2v, "high") == (
        "it trained at timesteps 875-1000 but runs at 900-1000 in inference with boundary 0.9",
        "min_timestep = 900 and max_timestep = 1000 in [experts.high]",
    )
    assert range_cause(i2v, "low") is None
    clear = expert_verdict(i2v, "high", points(0.05, 1800))  # reported whatever the effect
    assert clear.level == "clear" and clear.text.endswith(
        "But it trained at timesteps 875-1000 but runs at 900-1000 in inference with boundary "
        "0.9 (try min_timestep = 900 and max_timestep = 1000 in [experts.high])."
    )

    ti2v.experts["main"].max_timestep = 500  # one model: it runs at every timestep
    assert range_cause(ti2v, "main") == (
        "it trained at timesteps 0-500 but runs at 0-1000 in inference as the only model",
        "min_timestep = 0 and max_timestep = 1000 in [experts.main]",
    )


def test_strengths_cause_only_when_every_training_sample_is_at_0():
    config = load_recipe("wan22-t2v")
    assert training_sample_strengths(config) is None  # no prompts: no samples during training
    config.sample.prompts = ["a red circle"]
    assert training_sample_strengths(config) is None  # no every_n_epochs: none either
    config.sample.every_n_epochs = 10
    assert training_sample_strengths(config) == [1.0]
    config.sample.strengths = [0.0, 0.0]
    assert training_sample_strengths(config) == [0.0, 0.0]
    assert strengths_cause([0.0, 0.0]) == (
        "[sample] strengths are all 0 (strengths = [0, 0]): the samples during training show "
        "the base model, not the LoRA",
        "strengths = [1.0] in [sample]",
    )
    assert strengths_cause([0.0, 0.5]) is None and strengths_cause(None) is None
    clear = expert_verdict(config, "low", points(0.05, 1800), sample_strengths=[0.0])
    assert clear.causes == [
        "[sample] strengths are all 0 (strengths = [0]): the samples during training show "
        "the base model, not the LoRA (try strengths = [1.0] in [sample])"
    ]
    assert " But [sample] strengths are all 0" in clear.text
    assert expert_verdict(config, "low", points(0.05, 1800), sample_strengths=[1.0]).causes == []


def test_held_out_loss_above_the_base_models_only_with_held_out_items():
    config = load_recipe("wan22-t2v")
    assert expert_verdict(config, "low", points(0.05, 1800, loss=0.51)).causes == []
    config.validation.items = ["img_07"]
    up = expert_verdict(config, "low", points(0.05, 1800, loss=0.51))
    assert up.causes == [
        "the held-out loss is 2.0% above the base model's: the LoRA may be overfitting its "
        "training images (try fewer epochs or more images)"
    ]
    assert "held-out loss 0.5 (base model) -> 0.51 (+2.0%)" in up.text
    assert expert_verdict(config, "low", points(0.05, 1800, loss=0.49)).causes == []


def test_wording_clear_weak_and_none():
    config = load_recipe("wan22-t2v")
    clear = expert_verdict(config, "low", points(0.05, 1800))
    assert (
        clear.text
        == clear.summary
        == (
            "low-noise LoRA changes the prediction by 5% (clear): it moves the model away from the "
            "base model; validation loss 0.5 (base model) -> 0.49 (-2.0%) after 1800 steps."
        )
    )
    weak = expert_verdict(config, "high", points(0.003, 54))
    assert weak.summary == (
        "high-noise LoRA changes the prediction by 0.3% (weak): it will look much like the base "
        "model (validation loss 0.5 (base model) -> 0.49 (-2.0%) after 54 steps)."
    )
    assert weak.text == weak.summary + " Why: " + "; ".join(weak.causes) + "."
    assert len(weak.causes) == 2 and "from step 14 of 54" in weak.causes[1]
    none = expert_verdict(config, "high", points(0.0002, 54))
    assert none.level == "none" and "it will look like the base model" in none.text
    assert none.as_json()["summary"] == none.summary


@pytest.mark.parametrize(
    ("recipe", "expert", "name"),
    [
        ("wan22-t2v", "high", "high-noise LoRA"),
        ("wan22-t2v", "low", "low-noise LoRA"),
        ("wan22-i2v", "high", "high-noise LoRA"),
        ("wan22-i2v", "low", "low-noise LoRA"),
        ("wan22-ti2v-5b", "main", "the LoRA"),  # one model, no experts
        ("wan21-t2v", "main", "the LoRA"),
    ],
)
def test_the_lora_is_named_by_its_phase_or_as_the_only_one(recipe, expert, name):
    verdict = expert_verdict(load_recipe(recipe), expert, points(0.05, 1800))
    assert verdict.text.startswith(f"{name} changes the prediction by 5% (clear)")
    assert "noise" not in verdict.text or name != "the LoRA"


def test_the_tutorial_quotes_every_cause_in_the_verdicts_words():
    """docs/tutorial.md's "Is my LoRA working?" marks each cause's wording as a figure
    (tutorial/verdict_figures.py writes it with expert_verdict; test_docs_outputs keeps it
    current)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "tutorial.md").read_text("utf-8")
    section = text[text.index("## Is my LoRA working?") :]
    section = section[: section.index("\n## ", 1)]
    figures = verdict_figures()
    assert set(figures) == {
        "verdict_weak_demo",
        "verdict_steps",
        "verdict_lr",
        "verdict_range",
        "verdict_strengths",
        "verdict_held_out",
        "verdict_no_cause",
    }
    for name, value in figures.items():
        assert f"<!--fig:{name}-->{value}<!--/fig-->" in section, name


def test_report_panels_name_experts_only_where_there_are_two():
    assert panel_title("high", "validation", one_model=False) == "high expert: validation"
    assert panel_title("main", "loss", one_model=True) == "loss"  # TI2V-5B: one model
