"""Every number the tutorial and the README quote, from one place.

The docs never type a figure: they hold `<!--fig:NAME-->value<!--/fig-->` and
docs/make_outputs.py writes the value from `tutorial_figures()` (tests/test_docs_outputs.py
fails when a doc and this table disagree). The numbers come from the tool itself where it
computes them (the recipe's step count, the model files' sizes in the registry, the GPU
memory `wanlora doctor` estimates) and, for speeds and peaks, from the measurements in
benchmarks/RESULTS.md, kept here once (`MEASURED`; the test checks RESULTS.md still shows
them). Minutes and cost are derived: steps x s/step, plus the measured overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dataset.lint.files import RECIPE_IMAGE_COUNT
from ..doctor.memory import smallest_need
from ..models.download import human_bytes, referenced_models
from ..models.registry import MODEL_FILES
from ..recipes import load_recipe
from ..train.speed.memory_plan import WAN_14B
from .verdict_figures import verdict_figures


@dataclass(frozen=True)
class Measured:
    """One expert's training on one H200 at 960x960 (benchmarks/RESULTS.md, 2026-12-02)."""

    shown: str  # the s/step as the docs write it
    peak_gib: float
    results_text: str  # how RESULTS.md writes the s/step (the test looks for it there)

    @property
    def seconds_per_step(self) -> float:
        return float(self.shown)


GPU = "H200"  # every figure below was measured on one H200 (141 GB)
MEASURED = {
    # the reference trainer's own code (musubi-tuner) on an H200, issue 23's table
    "reference": Measured("1.10", 19.9, "1.103"),
    # default, room to spare: no recompute, CUDA graphs (bench_recipe, inside `wanlora train`)
    "exact": Measured("0.43", 28.2, "0.4308"),
    "exact_24": Measured("0.67", 21.4, "0.672"),  # --max-vram 24: 36/40 recomputed
    "lowmem": Measured("0.65", 17.6, "0.646"),  # fp8 storage, 40/40 recomputed
    "fast": Measured("0.34", 28.2, "0.343"),  # training.speed = "fast"
}
# Both experts, besides the steps (bench_recipe.py, RESULTS.md 2026-12-02): caching 0.4 min,
# loading and compiling 1.4 min; the default validation (base + 10 points per expert, ~46 s
# each, bench_validation.py) 1.5 min.
OVERHEAD_MINUTES = 3.3
PRICE_PER_HOUR = 3.50  # an example hourly price of one H200
RECIPE = "wan22-t2v"


def _minutes(value: float) -> str:
    return f"~{value:.0f}"


def tutorial_figures() -> dict[str, str]:
    """NAME -> the text the docs show for it."""
    config = load_recipe(RECIPE)
    per_epoch = RECIPE_IMAGE_COUNT * config.dataset.num_repeats // config.dataset.batch_size
    steps = per_epoch * config.training.max_train_epochs
    experts = len(config.experts)
    figures = {
        "images": str(RECIPE_IMAGE_COUNT),
        "steps_per_epoch": str(per_epoch),
        "steps_per_expert": str(steps),
        "steps_all": str(steps * experts),
    }
    for name, m in MEASURED.items():
        expert_min = steps * m.seconds_per_step / 60
        figures[f"{name}_s_per_step"] = m.shown
        figures[f"{name}_peak"] = f"{m.peak_gib:.1f} GiB"
        figures[f"{name}_min_expert"] = _minutes(expert_min)
        figures[f"{name}_min_all"] = _minutes(expert_min * experts)
        run_minutes = expert_min * experts + OVERHEAD_MINUTES
        figures[f"{name}_min_run"] = _minutes(run_minutes)
        figures[f"{name}_cost"] = f"${run_minutes / 60 * PRICE_PER_HOUR:.2f}"
    figures["overhead_min"] = _minutes(OVERHEAD_MINUTES)
    figures["gpu"] = GPU
    figures["price"] = f"${PRICE_PER_HOUR:.2f}/h"

    files = [MODEL_FILES[r.value] for r in referenced_models(config) if r.value in MODEL_FILES]
    figures["download"] = f"{sum(f.approx_bytes for f in files) / 1000**3:.0f} GB"
    dit = max(files, key=lambda f: f.approx_bytes)
    figures["dit_size"] = human_bytes(dit.approx_bytes)
    # what `wanlora doctor` prints: the smallest plan (every block streamed) plus its margin
    figures["doctor_need"] = f"~{human_bytes(smallest_need(config, WAN_14B))}"
    figures.update(verdict_figures())  # the verdict's own words
    return figures
