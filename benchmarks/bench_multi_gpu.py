"""Wall time of `wanlora train` on one GPU vs two: sequential, expert-parallel, data-parallel.

    python benchmarks/bench_multi_gpu.py --full-size DIR [--epochs 2]  # 14B experts, 960x960
    python benchmarks/bench_multi_gpu.py --demo [--epochs 20]          # tiny models: overheads
    python benchmarks/bench_multi_gpu.py PROJECT_DIR [--modes sequential,experts,data2]

Each mode trains the project's experts from scratch (--restart --overwrite) into a copy of
the project (the cache is built once, before any timing) through `run_training`, the code
`wanlora train` runs, and prints one JSON line: wall seconds, optimiser steps, the median
seconds per step of each expert after its first 3 steps (its warm steps; the first steps
include compilation and CUDA-graph capture), and the speed-up over the first mode.

--full-size DIR writes the recipe at real size with random weights into DIR (kept and reused):
one 28.6 GB fp16 DiT file in the real 14B expert layout that both experts train from, the
demo's 18 images at 960x960 (one bucket, 3600 tokens), and a tiny VAE and umT5 whose text
output is 4096 wide (the 14B DiT's text input), so the cache is built in seconds. Sampling is
off. The recipe's 100 epochs are shortened to --epochs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = {
    # name: (devices, parallel_experts, data_parallel)
    "sequential": (["cuda:0"], False, 1),
    "experts": (["cuda:0", "cuda:1"], True, 1),
    "data2": (["cuda:0", "cuda:1"], False, 2),
}
WARM_AFTER = 3  # steps left out of the per-step median (compile, warm-up, graph capture)


def full_size_toml(epochs: int, resolution: int, models: dict[str, str]) -> str:
    from wanlora.demo import models_toml

    return f"""\
# bench_multi_gpu.py --full-size: the wan22-t2v recipe with random 14B weights, shortened.
recipe = "wan22-t2v"

[project]
name = "Bench_v1"
author = "wanlora"
trigger = "flat demo shapes"

[dataset]
resolution = [{resolution}, {resolution}]

[training]
max_train_epochs = {epochs}
save_every_n_epochs = {epochs}
max_data_loader_n_workers = 0

{models_toml(models)}"""


def write_full_size_project(
    root: Path,
    *,
    epochs: int,
    resolution: int = 960,
    dit_layout: dict[str, list[int]] | None = None,
) -> Path:
    """The project described in the module docstring; `dit_layout` (default: the 14B expert)
    and `resolution` are smaller in the test suite. Returns its folder."""
    from PIL import Image

    from bench_load import expected_size, expert_layout, write_dit_file
    from wanlora.demo import write_demo_dataset
    from wanlora.fsutil import atomic_write_text
    from wanlora.models.tiny import write_tiny_models

    layout = dit_layout or expert_layout()
    models = root / "models"
    paths = write_tiny_models(models, text_dim=layout["text_embedding.0.weight"][1])
    dit = models / "dit_random_fp16.safetensors"
    if not dit.is_file() or dit.stat().st_size != expected_size(layout):
        write_dit_file(dit, layout)
    dataset = root / "dataset"
    if not any(dataset.glob("*.png")):
        for image_path in write_demo_dataset(dataset):
            with Image.open(image_path) as image:
                square = image.convert("RGB").resize((resolution, resolution))
            square.save(image_path)
    relative = {
        k: Path(getattr(paths, k)).relative_to(root).as_posix()
        for k in ("vae", "text_encoder", "tokenizer")
    }
    relative["dit_high"] = relative["dit_low"] = dit.relative_to(root).as_posix()  # one file
    atomic_write_text(root / "wanlora.toml", full_size_toml(epochs, resolution, relative))
    return root


def warm_step_seconds(reports) -> dict[str, float | None]:
    """Median seconds per optimiser step of each expert, its first WARM_AFTER steps left out
    (with data-parallel every rank reports; rank 0's steps are the ones that reach here)."""
    by_expert: dict[str, list[float]] = {}
    for report in reports:
        by_expert.setdefault(report.expert, []).append(report.seconds)
    return {
        expert: round(statistics.median(s[WARM_AFTER:]), 4) if len(s) > WARM_AFTER else None
        for expert, s in by_expert.items()
    }


RECIPE_SAMPLES = 1800  # per expert: 18 images x 100 epochs, batch 1


def projected_recipe_minutes(
    wall_s: float, steps: dict[str, int], warm_s: dict, *, side_by_side: bool, data_parallel: int
) -> float | None:
    """This run's wall time with each expert's steps extended to the recipe's (1800 samples,
    so 1800 / N optimiser steps data-parallel) at its warm speed: experts side by side add
    the longest extension, one after the other the sum."""
    if any(warm_s.get(e) is None for e in steps):
        return None
    extra = [(RECIPE_SAMPLES // data_parallel - n) * warm_s[e] for e, n in steps.items()]
    return round((wall_s + (max(extra) if side_by_side else sum(extra))) / 60, 1)


class StepLog:
    """The StepReports of one run, and when each expert's first step arrived."""

    def __init__(self):
        self.started = time.perf_counter()
        self.reports = []
        self.first_step_after: dict[str, float] = {}

    def add(self, report) -> None:
        self.reports.append(report)
        elapsed = round(time.perf_counter() - self.started, 1)
        self.first_step_after.setdefault(report.expert, elapsed)


def run_modes(source: Path, modes: list[str], *, cpu: bool, work: Path) -> list[dict]:
    from wanlora.recipes import load_project
    from wanlora.run.training import run_training

    rows, baseline = [], None
    for mode in modes:
        devices, parallel, data_parallel = MODES[mode]
        if cpu:
            devices = ["cpu"] * len(devices)
        target = work / mode
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("output", "models"))
        if (source / "models").exists():  # relative model paths in wanlora.toml
            (target / "models").symlink_to((source / "models").resolve())
        project = load_project(target)
        steps = StepLog()
        results = run_training(
            project,
            devices=devices,
            parallel_experts=parallel,
            data_parallel=data_parallel,
            overwrite=True,
            restart=True,
            on_step=steps.add,
        )
        wall = time.perf_counter() - steps.started
        baseline = baseline or wall
        row = {
            "mode": mode,
            "devices": devices,
            "wall_s": round(wall, 2),
            "steps": {r.expert: r.steps for r in results},
            "warm_s_per_step": warm_step_seconds(steps.reports),
            # since the mode started: load, compile, warm-up and capture (sequential: the
            # second expert's includes the first's training)
            "first_step_after_s": steps.first_step_after,
            # what this process still holds after training (the experts ran here: sequential)
            "gpu0_allocated_after_gib": None
            if cpu
            else round(torch.cuda.memory_allocated(0) / 2**30, 2),
            "recipe_min": projected_recipe_minutes(
                wall,
                {r.expert: r.steps for r in results},
                warm_step_seconds(steps.reports),
                side_by_side=parallel,
                data_parallel=data_parallel,
            ),
            "speedup_vs_first": round(baseline / wall, 2),
            "gpu": "cpu" if cpu else torch.cuda.get_device_name(0),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
        shutil.rmtree(target / "output", ignore_errors=True)  # LoRAs + states: GBs at 14B
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", type=Path)
    parser.add_argument("--demo", action="store_true", help="use the tiny demo project")
    parser.add_argument("--full-size", type=Path, metavar="DIR", help="write/reuse the 14B project")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cpu", action="store_true", help="cpu,cpu instead of two GPUs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from wanlora.cache.build import build_cache
    from wanlora.demo import create_demo_project
    from wanlora.recipes import load_project

    work = Path(tempfile.mkdtemp(prefix="wanlora-bench-"))
    try:
        if args.full_size:
            source = write_full_size_project(args.full_size, epochs=args.epochs or 2)
        elif args.demo or args.project is None:
            source = create_demo_project(work / "source", epochs=args.epochs or 20).root
        else:
            source = args.project
        device = torch.device("cpu" if args.cpu else "cuda:0")
        started = time.perf_counter()
        build_cache(load_project(source), device=device)
        print(json.dumps({"cache_s": round(time.perf_counter() - started, 2)}), flush=True)
        return run_modes(source, args.modes.split(","), cpu=args.cpu, work=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
