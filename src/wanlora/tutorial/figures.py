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
    """One expert's training on one H100 80GB at 960x960 (benchmarks/RESULTS.md)."""

    shown: str  # the s/step as the docs write it
    peak_gib: float
    results_text: str  # how RESULTS.md writes the s/step (the test looks for it there)

    @property
    def seconds_per_step(self) -> float:
        return float(self.shown)


MEASURED = {
    "reference": Measured("1.258", 19.9, "1.258"),  # musubi-tuner (PERF_ANCHOR.md)
    "exact": Measured("0.47", 57.0, "0.47"),  # default, room to spare: no recompute, graphs
    "exact_24": Measured("0.67", 21.4, "0.672"),  # --max-vram 24: 36/40 recomputed
    "lowmem": Measured("0.68", 17.7, "0.684"),  # fp8 storage, 40/40 recomputed
    "fast": Measured("0.40", 57.2, "0.406"),  # training.speed = "fast"
}
# caching, loading each 28.6 GB expert and compiling, both experts (RESULTS.md: ~5 min)
OVERHEAD_MINUTES = 5
PRICE_PER_HOUR = 2.50  # the example hourly price of one H100
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
    figures["price"] = f"${PRICE_PER_HOUR:.2f}/h"

    files = [MODEL_FILES[r.value] for r in referenced_models(config) if r.value in MODEL_FILES]
    figures["download"] = f"{sum(f.approx_bytes for f in files) / 1000**3:.0f} GB"
    dit = max(files, key=lambda f: f.approx_bytes)
    figures["dit_size"] = human_bytes(dit.approx_bytes)
    # what `wanlora doctor` prints: the smallest plan (every block streamed) plus its margin
    figures["doctor_need"] = f"~{human_bytes(smallest_need(config, WAN_14B))}"
    figures.update(verdict_figures())  # the verdict's own words
    return figures
