"""Block swap on a GPU: training steps with blocks streamed are bit-identical to resident ones.

Writes a tiny DiT (the real key layout, `--layers` blocks) and trains its LoRA for a few
steps (bf16 autocast forward + backward + AdamW, every block recomputed, fp8 storage) on the
GPU: once resident, once more resident (the GPU's own run-to-run spread), then with blocks
streamed from pinned host memory (wanlora.train.speed.block_swap), eager and with compiled
blocks: half of them, all of them, and the --max-vram 16 / 12 / 8 GiB modes (issue 23): the
share of the depth `wanlora train` streams for the 14B recipe at each budget (its plan,
doctor.memory.plan_for: 12, 24 and 37 of 40 blocks), spread over the tiny model's blocks the
same way. Losses and the final LoRA weights are compared bit for bit; the report also gives
the seconds per step, the peak memory and the bytes copied host->GPU per step. Attention runs
in SDPA's math kernel so the backward is deterministic. gpu_train_smoke.py runs this check too
(`check`).

    python benchmarks/gpu_swap_smoke.py --dir /tmp/swap-smoke            # on a GPU
    python benchmarks/gpu_swap_smoke.py --dir /tmp/swap-smoke --device cpu --layers 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def build(path: Path, device: torch.device, compiled: bool):
    """The tiny DiT as training prepares it: fp8 storage, LoRA, every block recomputed."""
    from wanlora.lora.inject import add_lora
    from wanlora.models import load_dit
    from wanlora.recipes import load_recipe
    from wanlora.train.speed.memory_plan import SpeedPlan
    from wanlora.train.speed.prepare import prepare_base, prepare_for_speed

    plan = SpeedPlan(torch.bfloat16, True, False, compiled, "full")
    model, _ = load_dit(path, dtype=plan.load_dtype, device=device, fp8_round=True)
    prepare_base(model, plan)
    torch.manual_seed(0)
    add_lora(model, load_recipe("wan22-t2v").lora)
    prepare_for_speed(model, plan, device)
    return model.train()


def train(model, device: torch.device, steps: int) -> dict:
    """`steps` optimiser steps on fixed random data: losses, LoRA weights, seconds per step."""
    from wanlora.lora.inject import lora_parameters

    params = lora_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)
    generator = torch.Generator("cpu").manual_seed(1)
    losses, seconds = [], []
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        x = torch.randn(1, 16, 1, 16, 16, generator=generator).to(device)
        ctx = torch.randn(1, 64, model.config.text_dim, generator=generator).to(device)
        target = torch.randn(1, 16, 1, 16, 16, generator=generator).to(device)
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(x, torch.tensor([500.0], device=device), ctx, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seconds.append(time.perf_counter() - start)
    return {
        "losses": losses,
        "lora": [p.detach().cpu().clone() for p in params],
        "s_per_step": statistics.median(seconds[1:] or seconds),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else 0.0,
    }


def same(a: dict, b: dict) -> tuple[bool, float]:
    """Bit-identical losses and LoRA weights?, and the largest LoRA difference."""
    equal = a["losses"] == b["losses"] and all(
        torch.equal(x, y) for x, y in zip(a["lora"], b["lora"], strict=True)
    )
    diff = max((x - y).abs().max().item() for x, y in zip(a["lora"], b["lora"], strict=True))
    return equal, diff


BUDGETS_GIB = (16, 12, 8)  # the small-card modes of issue 23


def budget_modes(layers: int) -> dict[str, list[int]]:
    """"16gib" / "12gib" / "8gib" -> the blocks to stream in a `layers`-block model: the share
    `wanlora train`'s plan streams of the 14B recipe's 40 at that budget, spread alike."""
    from wanlora.doctor.memory import plan_for
    from wanlora.recipes import load_recipe
    from wanlora.train.speed.checkpointing import spread
    from wanlora.train.speed.memory_plan import WAN_14B

    config = load_recipe("wan22-t2v")
    modes = {}
    for gib in BUDGETS_GIB:
        config.training.max_vram_gb = gib
        streamed = plan_for(config, WAN_14B, free_bytes=None).blocks_swapped
        share = max(1, round(streamed * layers / WAN_14B.num_layers))
        modes[f"{gib}gib"] = spread(min(share, layers), layers)
    return modes


def swap_modes(layers: int) -> dict[str, list[int]]:
    from wanlora.train.speed.checkpointing import spread

    return {"half": spread(layers // 2, layers), "all": list(range(layers)), **budget_modes(layers)}


def run(path: Path, device: torch.device, layers: int, steps: int, compiled: bool) -> dict:
    from wanlora.train.speed.block_swap import BlockSwap

    resident = train(build(path, device, compiled), device, steps)
    repeat = train(build(path, device, compiled), device, steps)
    report = {
        "compiled": compiled,
        "resident_s_per_step": resident["s_per_step"],
        "resident_peak_gib": resident["peak_gib"],
        "repeat_bit_identical": same(resident, repeat)[0],
    }
    for label, indices in swap_modes(layers).items():
        model = build(path, device, compiled)
        swap = BlockSwap(model, indices, device)
        result = train(model, device, steps)
        equal, diff = same(resident, result)
        report[label] = {
            "blocks": indices,
            "bit_identical": equal,
            "max_abs_diff": diff,
            "s_per_step": result["s_per_step"],
            "peak_gib": result["peak_gib"],
            "slots_mib": swap.device_bytes / 2**20,
            "host_mib": swap.host_bytes / 2**20,
            "loads": swap.stats.loads,
            "h2d_mib_per_step": 2 * max(0, len(indices) - swap.ring) * swap.block_bytes / 2**20,
        }
        swap.remove()
    return report


def check(
    directory: Path, device: torch.device, layers: int = 8, steps: int = 4, compile: str = "auto"
) -> tuple[dict, bool]:
    """The whole check (module docstring): (report, every streamed run bit-identical)."""
    from wanlora.models.tiny import write_tiny_dit

    directory.mkdir(parents=True, exist_ok=True)
    path = write_tiny_dit(directory / "dit.safetensors", num_layers=layers)
    modes = {"on": [True], "off": [False]}.get(
        compile, [False, True] if device.type == "cuda" else [False]
    )
    report = {"device": str(device), "torch": torch.__version__, "layers": layers, "runs": []}
    with sdpa_kernel(SDPBackend.MATH):  # a deterministic attention backward
        for compiled in modes:
            report["runs"].append(run(path, device, layers, steps, compiled))
    labels = list(swap_modes(layers))
    ok = all(r[k]["bit_identical"] for r in report["runs"] for k in labels)
    return report, ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--compile", default="auto", help="auto (GPU: eager and compiled), on, off")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    report, ok = check(args.dir, device, args.layers, args.steps, args.compile)
    print(json.dumps(report, indent=1))
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
