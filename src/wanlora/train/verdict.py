"""The end-of-training verdict: does each expert's LoRA move the model, and if not, why?

From an expert's validation points (validation.py: step 0 is the base model, the last one
the finished LoRA) and the run's settings, one plain sentence with the numbers, a level,
and the causes the run itself can see:

    level    by the LoRA's effect on the prediction, ||f_lora - f_base|| / ||f_base||, at
             the last point: below EFFECT_NONE "none", below EFFECT_CLEAR "weak", else
             "clear". Rules of thumb, not measured truths: at a few tenths of a percent
             the samples are the base model's to the eye
    causes   for a weak or no effect: too few steps; the learning rate decayed early (the
             recipe's polynomial power 8 is below 10% of its start after a quarter of the
             run); always: an expert trained outside the timesteps it runs at in
             inference; sample strengths all 0; a held-out loss above the base model's

A LoRA that moves the model says so too. The run layer (wanlora.run.validation) writes it
to output/verdict.json and `wanlora train` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..recipes.schema import RecipeConfig
from .schedule import lr_schedule

EFFECT_NONE = 0.001  # below 0.1% the LoRA does nothing you can see
EFFECT_CLEAR = 0.01  # from 1% on it moves the model clearly
FEW_STEPS = 300  # fewer optimiser steps than this rarely make a LoRA (the recipe: 1800)
LOW_LR = 0.1  # "decayed": below this fraction of the starting learning rate
RANGE_OVERLAP = 0.9  # trained range and inference range share less than this: outside


@dataclass
class ExpertVerdict:
    effect: float
    level: str  # "none" | "weak" | "clear"
    text: str
    causes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "effect": self.effect,
            "level": self.level,
            "text": self.text,
            "causes": self.causes,
        }


def effect_level(effect: float) -> str:
    if effect < EFFECT_NONE:
        return "none"
    return "weak" if effect < EFFECT_CLEAR else "clear"


def percent(value: float) -> str:
    """0.003 -> "0.3%", 0.0123 -> "1.2%", 0.25 -> "25%"."""
    v = value * 100
    return f"{v:.0f}%" if v >= 10 else f"{v:.2g}%"


def inference_ranges(config: RecipeConfig) -> dict[str, tuple[int, int]]:
    """Where each expert runs at inference (0..1000): two experts split at the boundary,
    the one trained higher (its range's midpoint) taking the high-noise side; one expert:
    everywhere."""
    names = list(config.experts)
    if len(names) != 2 or config.boundary is None:
        return {name: (0, 1000) for name in names}
    mid = {n: config.experts[n].min_timestep + config.experts[n].max_timestep for n in names}
    high, low = sorted(names, key=lambda n: -mid[n])
    split = round(config.boundary * 1000)
    return {high: (split, 1000), low: (0, split)}


def expert_label(config: RecipeConfig, expert: str) -> str:
    """ "high-noise" / "low-noise" for a two-expert recipe, else the expert's name."""
    ranges = inference_ranges(config)
    if len(ranges) != 2:
        return expert
    return "high-noise" if ranges[expert][1] == 1000 else "low-noise"


Cause = tuple[str, str]  # (what the run shows, what to change)


def range_cause(config: RecipeConfig, expert: str) -> Cause | None:
    settings = config.experts[expert]
    lo, hi = settings.min_timestep, settings.max_timestep
    run_lo, run_hi = inference_ranges(config)[expert]
    shared = max(0, min(hi, run_hi) - max(lo, run_lo))
    if shared >= RANGE_OVERLAP * (hi - lo) and shared >= RANGE_OVERLAP * (run_hi - run_lo):
        return None
    return (
        f"it trained at timesteps {lo}-{hi} but runs at {run_lo}-{run_hi} in inference "
        f"(boundary {config.boundary})",
        f"min_timestep = {run_lo} and max_timestep = {run_hi} in [experts.{expert}]",
    )


def lr_cause(config: RecipeConfig, steps: int) -> Cause | None:
    """The schedule's lr below LOW_LR of its start before half of the run."""
    start = config.optimizer.learning_rate
    lrs = lr_schedule(config.scheduler, start, steps)
    low = next((s for s, lr in enumerate(lrs) if lr < LOW_LR * start), None)
    if low is None or low >= steps / 2:
        return None
    s = config.scheduler
    shape = (
        f"{s.lr_scheduler}, power {s.lr_scheduler_power:g}"
        if s.lr_scheduler == "polynomial"
        else s.lr_scheduler
    )
    return (
        f"the learning rate is below {LOW_LR:.0%} of {start:g} from step {low} of {steps} on "
        f"({shape}): the last {1 - low / steps:.0%} of the steps barely move the LoRA",
        "a lower [scheduler] lr_scheduler_power or a higher [optimizer] learning_rate",
    )


def expert_verdict(
    config: RecipeConfig,
    expert: str,
    points: list[dict],
    sample_strengths: list[float] | None = None,
) -> ExpertVerdict | None:
    """The verdict from an expert's validation points (validation.jsonl records, step 0 =
    the base model); None without a point after step 0. `sample_strengths`: the strengths
    the samples during training use, when the settings have them."""
    base = next((p for p in points if p["step"] == 0), None)
    trained = [p for p in points if p["step"] > 0]
    if base is None or not trained:
        return None
    last = trained[-1]
    effect, steps = float(last["effect"]), int(last["step"])
    level = effect_level(effect)
    label = expert_label(config, expert)
    found: list[Cause | None] = []
    if level != "clear":
        if steps < FEW_STEPS:
            found.append((f"only {steps} optimiser steps", "more [training] max_train_epochs"))
        found.append(lr_cause(config, steps))
    found.append(range_cause(config, expert))
    if sample_strengths is not None and not any(sample_strengths):
        found.append(("[sample] strengths are all 0: the samples show the base model", "1.0"))
    held_out = bool(config.validation.items)
    if held_out and last["loss"] > base["loss"]:
        found.append(
            (
                f"the held-out loss is {last['loss'] / base['loss'] - 1:.1%} above the base "
                "model's: the LoRA may be overfitting its training images",
                "fewer epochs or more images",
            )
        )
    fixes = [fix for _why, fix in filter(None, found)]
    causes = [f"{why}; try {fix}" for why, fix in filter(None, found)]
    change = last["loss"] / base["loss"] - 1 if base["loss"] else 0.0
    which = "held-out" if held_out else "validation"
    numbers = (
        f"{which} loss {base['loss']:.4g} (base model) -> {last['loss']:.4g} "
        f"({change:+.1%}) after {steps} steps"
    )
    head = f"{label} LoRA changes the prediction by {percent(effect)} ({level})"
    if level == "clear":
        text = f"{head}: it moves the model away from the base model; {numbers}."
        if causes:
            text += " But " + "; ".join(causes) + "."
    else:
        looks = "like" if level == "none" else "much like"
        fix = "; ".join(fixes) or "more steps or a higher learning rate"
        text = f"{head}: it will look {looks} the base model ({numbers}) — try {fix}."
    return ExpertVerdict(effect, level, text, causes)
