"""Wall time of `wanlora train` on one GPU vs two: sequential, expert-parallel, data-parallel.

    python benchmarks/bench_multi_gpu.py PROJECT_DIR [--modes sequential,experts,data2]
    python benchmarks/bench_multi_gpu.py --demo [--epochs 20]   # tiny models: overheads only

Each mode trains the project's experts from scratch (--restart --overwrite) into a copy of
the project's output folder and prints one JSON line per mode: wall seconds (cache already
built before timing), steps, and the speed-up over `sequential`. With a real project on a
2-GPU box, expert-parallel should take ~1x one expert (vs 2x sequential) and data-parallel
~half of each expert plus its all_reduce. Not measured yet (no 2-GPU time in the session
that wrote it): results belong in docs/multi_gpu.md when they are.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

MODES = {
    # name: (devices, parallel_experts, data_parallel)
    "sequential": (["cuda:0"], False, 1),
    "experts": (["cuda:0", "cuda:1"], True, 1),
    "data2": (["cuda:0", "cuda:1"], False, 2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", type=Path)
    parser.add_argument("--demo", action="store_true", help="use the tiny demo project")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cpu", action="store_true", help="cpu,cpu instead of two GPUs")
    args = parser.parse_args()

    from wanlora.cache.build import build_cache
    from wanlora.demo import create_demo_project
    from wanlora.recipes import load_project
    from wanlora.train.run import run_training

    work = Path(tempfile.mkdtemp(prefix="wanlora-bench-"))
    if args.demo or args.project is None:
        source = create_demo_project(work / "source", epochs=args.epochs).root
    else:
        source = args.project
    device = "cpu" if args.cpu else "cuda:0"
    build_cache(load_project(source), device=torch.device(device))
    baseline = None
    for mode in args.modes.split(","):
        devices, parallel, data_parallel = MODES[mode]
        if args.cpu:
            devices = ["cpu"] * len(devices)
        target = work / mode
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("output", "models"))
        if (source / "models").exists():  # demo models: relative paths in wanlora.toml
            (target / "models").symlink_to((source / "models").resolve())
        project = load_project(target)
        started = time.perf_counter()
        results = run_training(
            project,
            devices=devices,
            parallel_experts=parallel,
            data_parallel=data_parallel,
            overwrite=True,
            restart=True,
        )
        wall = time.perf_counter() - started
        baseline = baseline or wall
        print(
            json.dumps(
                {
                    "mode": mode,
                    "devices": devices,
                    "wall_s": round(wall, 2),
                    "steps": {r.expert: r.steps for r in results},
                    "speedup_vs_first": round(baseline / wall, 2),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                }
            ),
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
