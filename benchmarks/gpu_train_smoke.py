"""End-to-end training of the built-in demo on a GPU: with and without the CUDA-graphed step.

Runs the library's own training (wanlora.run.training.run_training) on the demo project's tiny
real-layout models twice on the GPU, once with `training.cuda_graph = "auto"` (graphed) and
once with "off", and compares the two experts' LoRA files (the graph replays the same
kernels, so they should agree to the last bit or very nearly). Then the block-swap check of
gpu_swap_smoke.py (`check`: training steps with blocks streamed from host memory, half, all
and the --max-vram 16 / 12 / 8 GiB modes' share of the blocks, bit-identical to resident
ones; `--no-swap` skips it); the exit status is 1 when a streamed run differs.

    python benchmarks/gpu_train_smoke.py --dir /tmp/gpu-smoke
    python benchmarks/gpu_train_smoke.py --dir /tmp/gpu-smoke --tiny --device cpu  # smoke test

--tiny: one epoch on two of the demo's images, a 4-block swap check of one step.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_swap_smoke  # noqa: E402 - benchmarks/ is not a package: its folder goes on the path


def move_out_and_back(expert: str, epochs_done: int, model: torch.nn.Module) -> None:
    """What sampling between epochs may do (offload): the trained model to the CPU and back."""
    device = next(model.parameters()).device
    model.to("cpu")
    model.to(device)


def train_demo(
    root: Path,
    cuda_graph: str,
    device: torch.device,
    move: bool = False,
    epochs: int = 2,
    images: int | None = None,
) -> dict:
    from wanlora.demo import create_demo_project, write_demo_dataset
    from wanlora.recipes import load_project
    from wanlora.run.training import run_training

    if images is not None:  # the demo keeps a dataset already there
        write_demo_dataset(root / "dataset", count=images, seed=1)  # the demo's seed
    project = create_demo_project(root, epochs=epochs)
    toml = root / "wanlora.toml"
    text = toml.read_text().replace("[training]\n", f'[training]\ncuda_graph = "{cuda_graph}"\n', 1)
    toml.write_text(text)
    project = load_project(root)
    losses: dict[str, list[float]] = {}
    start = time.perf_counter()
    results = run_training(
        project,
        device=device,
        on_step=lambda report: losses.setdefault(report.expert, []).append(report.loss),
        on_epoch_end=move_out_and_back if move else None,
    )
    return {
        "seconds": time.perf_counter() - start,
        "files": {r.expert: str(r.lora_path) for r in results},
        "losses": losses,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--modes",
        default="auto,off",
        help="the two cuda_graph settings to compare (off,off: eager run-to-run spread)",
    )
    p.add_argument(
        "--move",
        action="store_true",
        help="move the model to the CPU and back after every epoch (sampling with offload)",
    )
    p.add_argument("--no-swap", action="store_true", help="skip the block-swap check")
    p.add_argument("--tiny", action="store_true", help="1 epoch, 2 images, 4 blocks (CPU smoke)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    device = torch.device(args.device)
    shutil.rmtree(args.dir, ignore_errors=True)
    first, second = args.modes.split(",")
    size = dict(epochs=1, images=2) if args.tiny else {}
    runs = [
        train_demo(args.dir / f"{i}-{mode}", mode, device, args.move, **size)
        for i, mode in enumerate((first, second))
    ]
    report = {"device": str(device), "torch": torch.__version__, "modes": [first, second]}
    for expert, path in runs[0]["files"].items():
        a, b = load_file(path), load_file(runs[1]["files"][expert])
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        report[expert] = {
            "max_abs_diff": diff,
            "bit_identical": all(torch.equal(a[k], b[k]) for k in a),
            "last_losses": [run["losses"][expert][-3:] for run in runs],
        }
    report["seconds"] = [round(run["seconds"], 1) for run in runs]
    swap_ok = True
    if not args.no_swap:
        layers, steps = (4, 1) if args.tiny else (8, 4)
        report["swap"], swap_ok = gpu_swap_smoke.check(args.dir / "swap", device, layers, steps)
    print(json.dumps(report, indent=1))
    return 0 if swap_ok else 1


if __name__ == "__main__":
    sys.exit(main())
