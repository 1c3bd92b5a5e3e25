"""What validation (train/validation.py) costs next to training: time and GPU memory.

One Wan 2.2 expert with random weights at the 14B shape (bench_step.py's builder; --tiny
for the CPU smoke test), planned as the recipe's default ("auto" storage and recompute,
compiled, the CUDA-graphed step where the loop would use it). It times warm training steps,
then the recipe's validation set (18 items at 960x960, 4 timesteps: 18 forwards a point):
the base pass (compiles included, once a run) and warm points, with the peak memory of each
phase. The overhead at the recipe's cadence is (base + 10 points) / (1800 steps).

    python benchmarks/bench_validation.py --out DIR     # on a GPU: DIR/validation.json
    python benchmarks/bench_validation.py --tiny        # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_step  # noqa: E402  (this folder's script: the random DiT and the timed steps)

RECIPE_STEPS, RECIPE_POINTS, RECIPE_ITEMS = 1800, 10, 18


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def run(
    cfg: dict, device: torch.device, warmup: int, steps: int, items: int,
    max_vram: float | None = None,
) -> dict:
    from wanlora.lora.inject import add_lora, lora_parameters
    from wanlora.models.precision import grad_scaler
    from wanlora.recipes import load_recipe
    from wanlora.train.speed.cuda_graph import GraphedStep, set_capturable, why_not_graphed
    from wanlora.train.speed.memory_plan import DitShape, plan_speed
    from wanlora.train.speed.prepare import prepare_base, prepare_for_speed
    from wanlora.train.step import prediction_loss
    from wanlora.train.validation import Validator, build_validation_set

    recipe = load_recipe("wan22-t2v")
    dtype = torch.float16
    expert = recipe.experts["low"]
    tokens = (cfg["latent"] // 2) ** 2
    shape = DitShape.wan(
        cfg["dim"], cfg["ffn_dim"], cfg["num_layers"], cfg["text_dim"], cfg["freq_dim"]
    )
    training = recipe.training.model_copy(update={"max_vram_gb": max_vram})
    plan = plan_speed(training, device, dtype, tokens=tokens, shape=shape, rank=16)
    model = bench_step.build_random_dit(cfg, device, plan.load_dtype)
    prepare_base(model, plan)
    torch.manual_seed(0)
    add_lora(model, recipe.lora)
    prepare_for_speed(model, plan, device)
    model.train()
    optimizer = torch.optim.AdamW(
        lora_parameters(model), lr=3e-4, weight_decay=0.1, fused=device.type == "cuda"
    )
    scaler = grad_scaler(device, dtype)
    n_ckpt = len(model.wanlora_checkpointed)
    graphed = None
    if why_not_graphed(training, 0.0, device, n_ckpt, 1) is None:
        set_capturable(optimizer, device, on=True)
        graphed = GraphedStep(
            lambda *inputs: prediction_loss(model, *inputs, dtype, cache_enabled=False),
            lora_parameters(model),
            optimizer,
            scaler,
        )
    generator = torch.Generator("cpu").manual_seed(5)
    samples = bench_step.make_samples(cfg)

    def train(n_warm: int, n: int) -> list[float]:
        times, _losses = bench_step._steps(
            model, samples, recipe, expert, generator, device, dtype, scaler, optimizer,
            graphed, n_warm, n,
        )  # fmt: skip
        return times[n_warm:]

    reset_peak(device)
    step_times = train(warmup, steps)
    train_peak = peak_gib(device)
    step_s = sorted(step_times)[len(step_times) // 2]

    vset = build_validation_set(bench_step.make_samples(cfg, n=items, seed=2), expert, 4, seed=5)
    validator = Validator(vset, device, dtype)
    reset_peak(device)
    _, base_s = timed(lambda: validator.base_point(model), device)  # compiles included
    _, first_s = timed(lambda: validator.point(model), device)
    _, point_s = timed(lambda: validator.point(model), device)
    validation_peak = peak_gib(device)
    after = train(0, 3)  # training goes on (the CUDA graph replays) after validation
    overhead = (base_s + RECIPE_POINTS * point_s) / (RECIPE_STEPS * step_s)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "plan": plan.describe() + (", CUDA-graphed step" if graphed else ""),
        "train_s_per_step": step_s,
        "train_peak_gib": train_peak,
        "validation_forwards_per_point": len(vset.pairs),
        "validation_base_s": base_s,
        "validation_first_point_s": first_s,
        "validation_point_s": point_s,
        "validation_s_per_forward": point_s / len(vset.pairs),
        "validation_peak_gib": validation_peak,
        "steps_after_validation_s": after,
        "recipe_overhead": overhead,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny dims (CPU smoke run)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-vram", type=float, default=None, help="the plan's budget, GiB")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = bench_step.TINY if args.tiny else bench_step.FULL
    warmup, steps = (1, 3) if args.tiny else (args.warmup, args.steps)
    result = run(
        cfg, device, warmup, steps, items=4 if args.tiny else RECIPE_ITEMS,
        max_vram=args.max_vram,
    )
    text = json.dumps(result, indent=2)
    print(text)
    print(
        f"training {result['train_s_per_step']:.3f} s/step, peak {result['train_peak_gib']:.1f} "
        f"GiB; validation {result['validation_point_s']:.2f} s a point "
        f"({result['validation_s_per_forward']:.3f} s a forward), base pass "
        f"{result['validation_base_s']:.1f} s, peak {result['validation_peak_gib']:.1f} GiB; "
        f"recipe overhead {result['recipe_overhead']:.1%}"
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"validation{'' if args.max_vram is None else f'-{args.max_vram:g}'}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
