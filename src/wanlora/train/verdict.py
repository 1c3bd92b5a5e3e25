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
             run; warmup steps before the peak do not count). Whatever the effect: an
             expert trained outside the timesteps it runs at in inference; sample
             strengths all 0 while samples are rendered during training (they then show
             the base model); a held-out loss above the base model's

Each cause is "what the run shows (try what to change)", with the run's numbers. Two
experts are named by their phase ("high-noise LoRA"); a one-model task (TI2V-5B, Wan 2.1)
says "the LoRA". The run layer (wanlora.run.validation) writes the verdict to
output/verdict.json and `wanlora train` prints it; the report shows `summary` and the
causes as a list.
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
    text: str  # the whole verdict, causes included (what `wanlora train` prints)
    causes: list[str] = field(default_factory=list)
    summary: str = ""  # the text without its causes (the report lists them under it)

    def as_json(self) -> dict:
        return {
            "effect": self.effect,
            "level": self.level,
            "text": self.text,
            "summary": self.summary,
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


def two_experts(config: RecipeConfig) -> bool:
    """A boundary between two experts (Wan 2.2 A14B T2V/I2V); else one model everywhere."""
    return len(config.experts) == 2 and config.boundary is not None


def inference_ranges(config: RecipeConfig) -> dict[str, tuple[int, int]]:
    """Where each expert runs at inference (0..1000): two experts split at the boundary,
    the one trained higher (its range's midpoint) taking the high-noise side; one expert:
    everywhere."""
    names = list(config.experts)
    if not two_experts(config):
        return {name: (0, 1000) for name in names}
    mid = {n: config.experts[n].min_timestep + config.experts[n].max_timestep for n in names}
    high, low = sorted(names, key=lambda n: -mid[n])
    split = round(config.boundary * 1000)
    return {high: (split, 1000), low: (0, split)}


def lora_name(config: RecipeConfig, expert: str) -> str:
    """ "high-noise LoRA" / "low-noise LoRA" for a two-expert recipe, else "the LoRA"."""
    if not two_experts(config):
        return "the LoRA"
    side = "high" if inference_ranges(config)[expert][1] == 1000 else "low"
    return f"{side}-noise LoRA"


Cause = tuple[str, str]  # (what the run shows, what to change)


def range_cause(config: RecipeConfig, expert: str) -> Cause | None:
    settings = config.experts[expert]
    lo, hi = settings.min_timestep, settings.max_timestep
    run_lo, run_hi = inference_ranges(config)[expert]
    shared = max(0, min(hi, run_hi) - max(lo, run_lo))
    if shared >= RANGE_OVERLAP * (hi - lo) and shared >= RANGE_OVERLAP * (run_hi - run_lo):
        return None
    where = f"with boundary {config.boundary:g}" if two_experts(config) else "as the only model"
    return (
        f"it trained at timesteps {lo}-{hi} but runs at {run_lo}-{run_hi} in inference {where}",
        f"min_timestep = {run_lo} and max_timestep = {run_hi} in [experts.{expert}]",
    )


def lr_cause(config: RecipeConfig, steps: int) -> Cause | None:
    """The schedule's lr below LOW_LR of its start, after its warmup, before half of the
    run."""
    start = config.optimizer.learning_rate
    lrs = lr_schedule(config.scheduler, start, steps)
    warmup = min(config.scheduler.lr_warmup_steps, steps)  # rising, not decayed
    low = next((s for s in range(warmup, steps) if lrs[s] < LOW_LR * start), None)
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


def training_sample_strengths(config: RecipeConfig) -> list[float] | None:
    """The `[sample] strengths` the samples during training render at; None when no
    samples are rendered during training (no prompts, or no every_n_epochs)."""
    s = config.sample
    return list(s.strengths) if s.prompts and s.every_n_epochs is not None else None


def strengths_cause(sample_strengths: list[float] | None) -> Cause | None:
    if sample_strengths is None or any(sample_strengths):
        return None
    shown = ", ".join(f"{s:g}" for s in sample_strengths)
    return (
        f"[sample] strengths are all 0 (strengths = [{shown}]): the samples during training "
        "show the base model, not the LoRA",
        "strengths = [1.0] in [sample]",
    )


def expert_verdict(
    config: RecipeConfig,
    expert: str,
    points: list[dict],
    sample_strengths: list[float] | None = None,
) -> ExpertVerdict | None:
    """The verdict from an expert's validation points (validation.jsonl records, step 0 =
    the base model); None without a point after step 0. `sample_strengths`: the strengths
    the samples during training use (training_sample_strengths), None without such
    samples."""
    base = next((p for p in points if p["step"] == 0), None)
    trained = [p for p in points if p["step"] > 0]
    if base is None or not trained:
        return None
    last = trained[-1]
    effect, steps = float(last["effect"]), int(last["step"])
    level = effect_level(effect)
    found: list[Cause | None] = []
    if level != "clear":
        if steps < FEW_STEPS:
            found.append((f"only {steps} optimiser steps", "more [training] max_train_epochs"))
        found.append(lr_cause(config, steps))
    found.append(range_cause(config, expert))
    found.append(strengths_cause(sample_strengths))
    held_out = bool(config.validation.items)
    if held_out and last["loss"] > base["loss"]:
        found.append(
            (
                f"the held-out loss is {last['loss'] / base['loss'] - 1:.1%} above the base "
                "model's: the LoRA may be overfitting its training images",
                "fewer epochs or more images",
            )
        )
    causes = [f"{why} (try {fix})" for why, fix in filter(None, found)]
    change = last["loss"] / base["loss"] - 1 if base["loss"] else 0.0
    which = "held-out" if held_out else "validation"
    numbers = (
        f"{which} loss {base['loss']:.4g} (base model) -> {last['loss']:.4g} "
        f"({change:+.1%}) after {steps} steps"
    )
    head = f"{lora_name(config, expert)} changes the prediction by {percent(effect)} ({level})"
    if level == "clear":
        summary = f"{head}: it moves the model away from the base model; {numbers}."
        text = summary + (" But " + "; ".join(causes) + "." if causes else "")
    else:
        looks = "like" if level == "none" else "much like"
        summary = f"{head}: it will look {looks} the base model ({numbers})."
        if not causes:  # nothing to list: the general advice is part of the summary
            summary += (
                " No cause shows in the run's settings: try more steps or a higher "
                "[optimizer] learning_rate."
            )
        text = summary + (" Why: " + "; ".join(causes) + "." if causes else "")
    return ExpertVerdict(effect, level, text, causes, summary)
