"""Time warm training steps of one Wan 2.2 expert + LoRA, per speed mode, side by side.

Builds the DiT with random weights directly on the device (no file): the 14B expert by
default (dim 5120, 40 layers, 40 heads, ffn 13824, text_dim 4096, freq_dim 256), or tiny
dims with --tiny (the CPU smoke test). Every variant runs the library's own training step
(wanlora.train.step.training_step: fp16 autocast, GradScaler, MSE in float32) on the same
data and the same LoRA initialisation, so the loss curves are comparable.

    python benchmarks/bench_step.py --all --out DIR        # every variant, fresh process each
    python benchmarks/bench_step.py --variant exact        # one variant, this process
    python benchmarks/bench_step.py --tiny --all --inline  # CPU smoke run
    python benchmarks/bench_step.py --model ti2v-5b --frames 121 --all --out DIR  # TI2V-5B
    python benchmarks/bench_step.py --model i2v-a14b --frames 81 --all --out DIR  # I2V-A14B

--model ti2v-5b builds the Wan 2.2 TI2V-5B DiT instead (dim 3072, 30 layers, 24 heads, ffn
14336, in/out 48 channels) and trains the wan22-ti2v-5b recipe's step (per-token timesteps,
image-to-video share, masked loss: wanlora.train.ti2v) at 704p, i.e. 1280x704 (latent 80x44,
880 tokens a latent frame), on --frames 1 (an image) or 121 (31 latent frames, 27280 tokens).
--model i2v-a14b: the Wan 2.2 I2V-A14B expert (the T2V expert's dims, 36 input channels:
noisy 16 + mask 4 + y 16) on the wan22-i2v recipe's step at 832x480 (latent 104x60), on
--frames 33 or 81 (21 latent frames, 32760 tokens).

Variants (see VARIANTS): "reference" is the direct port (diffusers layerwise fp8 casting,
fp16 autocast + GradScaler, every block checkpointed, SDPA, no compile); the others go through
wanlora.train.speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

FULL = dict(dim=5120, ffn_dim=13824, num_layers=40, text_dim=4096, freq_dim=256, latent=120)
TINY = dict(dim=256, ffn_dim=512, num_layers=2, text_dim=64, freq_dim=256, latent=8)
TEXT_TOKENS = 120  # real caption tokens, padded to 512 by the training step
# Wan 2.2 TI2V-5B at 704p (1280x704: latent 80 x 44 with the Wan 2.2 VAE's 16x stride)
FULL_TI2V = dict(
    dim=3072, ffn_dim=14336, num_layers=30, text_dim=4096, freq_dim=256, latent=(44, 80),
    channels=48, recipe="wan22-ti2v-5b",
)  # fmt: skip
TINY_TI2V = dict(TINY, latent=(4, 8), channels=48, recipe="wan22-ti2v-5b")
# Wan 2.2 I2V-A14B at 832x480 (latent 104 x 60): the T2V expert's dims, 36 input channels
# (noisy 16 + the first-frame conditioning: mask 4 + y 16), out 16
FULL_I2V = dict(FULL, latent=(60, 104), in_channels=36, recipe="wan22-i2v")
TINY_I2V = dict(TINY, latent=(4, 6), in_channels=36, recipe="wan22-i2v")  # 48x32 pixels
MODELS = {
    "t2v-a14b": (FULL, TINY),
    "ti2v-5b": (FULL_TI2V, TINY_TI2V),
    "i2v-a14b": (FULL_I2V, TINY_I2V),
}


def latent_shape(cfg: dict, frames: int = 1) -> tuple[int, int, int, int]:
    """(C, latent frames, H, W) of one sample: `frames` video frames (4n+1)."""
    side = cfg["latent"]
    height, width = side if isinstance(side, tuple) else (side, side)
    return cfg.get("channels", 16), 1 + (frames - 1) // 4, height, width


def token_count(cfg: dict, frames: int = 1) -> int:
    _c, f, h, w = latent_shape(cfg, frames)
    return f * (h // 2) * (w // 2)

# name -> (speed, compile, checkpointing, fp8_storage, description)
VARIANTS: dict[str, dict] = {
    "reference": dict(desc="direct port: layerwise fp8 hooks, full ckpt, eager"),
    "exact-eager": dict(
        speed="exact",
        compile="off",
        checkpointing="full",
        fp8_storage="on",
        desc="exact, Fp8Linear storage, full ckpt, eager",
    ),
    "exact-lowmem": dict(
        speed="exact",
        compile="on",
        checkpointing="full",
        fp8_storage="on",
        desc="exact, fp8 storage, full ckpt, compiled",
    ),
    "exact": dict(
        speed="exact",
        compile="on",
        checkpointing="auto",
        fp8_storage="off",
        desc="exact, 16-bit storage, auto ckpt, compiled",
    ),
    "exact-fp8-auto": dict(
        speed="exact",
        compile="on",
        checkpointing="auto",
        fp8_storage="on",
        desc="exact, fp8 storage, auto ckpt, compiled",
    ),
    "fast": dict(
        speed="fast",
        compile="on",
        checkpointing="auto",
        fp8_storage="on",
        desc="FAST (fp8 matmuls), auto ckpt, compiled",
    ),
    "fast-lowmem": dict(
        speed="fast",
        compile="on",
        checkpointing="full",
        fp8_storage="on",
        desc="FAST (fp8 matmuls), full ckpt, compiled",
    ),
}
VARIANTS["auto"] = dict(
    speed="exact",
    compile="on",
    checkpointing="auto",
    fp8_storage="auto",
    desc="exact, storage + recompute planned for the memory budget, compiled",
)
VARIANTS["fast-eager"] = dict(VARIANTS["fast"], compile="off", desc="FAST, eager (smoke test)")
VARIANTS["exact-cudnn"] = dict(VARIANTS["exact"], sdpa="cudnn", desc="exact + cuDNN attention")
VARIANTS["fast-cudnn"] = dict(VARIANTS["fast"], sdpa="cudnn", desc="FAST + cuDNN attention")
VARIANTS["exact-lowmem-cudnn"] = dict(
    VARIANTS["exact-lowmem"], sdpa="cudnn", desc="exact lowmem + cuDNN attention"
)
# Every variant but "reference" replays its step from a CUDA graph where the training loop
# would (cuda_graph.why_not_graphed: no block recomputed, ...). The variants below switch one
# optimisation back off, for before/after measurements.
VARIANTS["exact-nograph"] = dict(VARIANTS["exact"], graph=False, desc="exact, eager step")
VARIANTS["fast-nograph"] = dict(VARIANTS["fast"], graph=False, desc="FAST, eager step")
VARIANTS["fast-no-t"] = dict(
    VARIANTS["fast"], transposed=False, desc="FAST without transposed fp8 copies"
)
VARIANTS["exact-nofold"] = dict(
    VARIANTS["exact"], text_fold="off", desc="exact, all 512 text rows attended (no fold)"
)
VARIANTS["fast-nofold"] = dict(
    VARIANTS["fast"], text_fold="off", desc="FAST, all 512 text rows attended (no fold)"
)
VARIANTS["exact-peftcast"] = dict(
    VARIANTS["exact-nograph"], peft_cast=True, desc="exact, eager step, peft casts"
)
VARIANTS["fast-peftcast"] = dict(
    VARIANTS["fast-nograph"], peft_cast=True, desc="FAST, eager step, peft casts"
)
VARIANTS["exact-foreach"] = dict(
    VARIANTS["exact-nograph"], foreach=True, desc="exact, eager step, foreach AdamW"
)
VARIANTS["fast-foreach"] = dict(
    VARIANTS["fast-nograph"], foreach=True, desc="FAST, eager step, foreach AdamW"
)
# Block swap (issue 23; benchmarks/reference_swap.py): planned for a 16 / 12 / 8 GiB card,
# built uncapped, then capped at that budget once the streamed blocks are in host memory (so
# these ignore --max-vram). "reference-swapN": the reference port (layerwise fp8 hooks, eager)
# with a reference-like synchronous swap of its last N blocks, the reference trainer's
# --blocks_to_swap at each of those budgets.
for _gib, _blocks in ((16, 16), (12, 27), (8, 38)):
    VARIANTS[f"exact-swap{_gib}"] = dict(
        VARIANTS["exact-lowmem"],
        checkpointing="auto",
        swap_budget=_gib,
        desc=f"exact, planned for {_gib} GiB: blocks streamed from host memory, compiled",
    )
    VARIANTS[f"reference-swap{_blocks}"] = dict(
        reference_swap=_blocks,
        swap_budget=_gib,
        desc=f"direct port + reference-like synchronous swap of {_blocks} blocks, eager",
    )
VARIANTS["exact-swap-eager"] = dict(
    VARIANTS["exact-swap8"], compile="off", desc="exact swap, eager (smoke test)"
)
DEFAULT_ORDER = ["reference", "exact-lowmem", "exact", "fast", "fast-lowmem", "exact-eager"]


def model_flops(cfg: dict, tokens: int, text_len: int = 512) -> dict[str, float]:
    """Matmul FLOPs of one step (frozen base + LoRA; LoRA's own FLOPs ignored, <1%)."""
    d, f, n = cfg["dim"], cfg["ffn_dim"], cfg["num_layers"]
    lin = 2 * tokens * (4 * d * d + 2 * d * d + 2 * d * f)  # self q,k,v,o + cross q,o + ffn
    lin += 2 * text_len * 2 * d * d  # cross k,v on the text
    att = 4 * tokens * tokens * d + 4 * tokens * text_len * d  # QK^T and PV, self + cross
    fwd = n * (lin + att)
    # backward: input gradients of the linears (= their forward), attention 2x its forward
    useful = n * (2 * lin + 3 * att)
    return {"forward": fwd, "useful": useful, "linear_fwd": n * lin, "attention_fwd": n * att}


def build_random_dit(cfg: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The DiT as load_dit builds it, with random fp8-rounded weights made on `device`."""
    from diffusers import WanTransformer3DModel

    from wanlora.models.assign import assign_parameter, build_on_meta
    from wanlora.models.dit import (
        FLOAT32_TENSOR_PREFIXES,
        DitInfo,
        Float32TimeConditionEmbedder,
        diffusers_key_to_wan,
    )

    info = DitInfo(
        path=Path("random"),
        dim=cfg["dim"],
        ffn_dim=cfg["ffn_dim"],
        num_layers=cfg["num_layers"],
        num_heads=cfg["dim"] // 128,
        in_channels=cfg.get("in_channels", cfg.get("channels", 16)),
        out_channels=cfg.get("channels", 16),
        text_dim=cfg["text_dim"],
        freq_dim=cfg["freq_dim"],
        patch_size=(1, 2, 2),
        file_dtype=torch.float16,
        compute_dtype=torch.float16,
    )
    model = build_on_meta(lambda: WanTransformer3DModel(**info.diffusers_config()))
    gen = torch.Generator(device).manual_seed(seed)
    for name, param in list(model.named_parameters()):
        shape = tuple(param.shape)
        if name.endswith("bias"):
            tensor = torch.zeros(shape, device=device)
        elif "norm" in name:
            tensor = torch.ones(shape, device=device)
        elif "scale_shift_table" in name:
            tensor = torch.randn(shape, device=device, generator=gen) / cfg["dim"] ** 0.5
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod().item()) if len(shape) > 1 else 1)
            std = min(0.02, fan_in**-0.5)
            tensor = torch.randn(shape, device=device, generator=gen, dtype=torch.float16) * std
        tensor = tensor.to(torch.float8_e4m3fn)  # the recipe's fp8_base rounding
        wan = diffusers_key_to_wan(name) or ""
        target = torch.float32 if wan.startswith(FLOAT32_TENSOR_PREFIXES) else dtype
        assign_parameter(model, name, tensor.to(target), Path("random"))
        del tensor
    model.to(device)
    model.condition_embedder = Float32TimeConditionEmbedder(model.condition_embedder, info.freq_dim)
    model.eval()
    return model


def make_samples(cfg: dict, n: int = 4, seed: int = 1, frames: int = 1):
    gen = torch.Generator("cpu").manual_seed(seed)
    if cfg.get("in_channels") == 36:  # I2V: (latent, text, the official mask + a random y)
        from wanlora.cache.i2v_conditioning import conditioning_mask

        shape = latent_shape(cfg, frames)
        mask = conditioning_mask(frames, *shape[2:])
        return [
            (
                torch.randn(shape, generator=gen),
                torch.randn(TEXT_TOKENS, cfg["text_dim"], generator=gen) * 0.1,
                torch.cat([mask, torch.randn(shape, generator=gen)]),
            )
            for _ in range(n)
        ]
    return [
        (
            torch.randn(latent_shape(cfg, frames), generator=gen),
            torch.randn(TEXT_TOKENS, cfg["text_dim"], generator=gen) * 0.1,
        )
        for _ in range(n)
    ]


def cap_memory(device: torch.device, max_vram_gb: float | None) -> None:
    """Cap this process's CUDA allocator at max_vram_gb GiB (before anything is allocated)."""
    if max_vram_gb is None or device.type != "cuda":
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, max_vram_gb * 2**30 / total), index)


def run_variant(
    name: str,
    cfg: dict,
    device: torch.device,
    warmup: int,
    steps: int,
    max_vram_gb: float | None = None,
    profile: bool = False,
    frames: int = 1,
) -> dict:
    from wanlora.lora.inject import add_lora, lora_parameters
    from wanlora.models.precision import grad_scaler
    from wanlora.recipes import load_recipe
    from wanlora.train.speed.cuda_graph import why_not_graphed
    from wanlora.train.speed.memory_plan import DitShape, plan_speed
    from wanlora.train.speed.prepare import prepare_base, prepare_for_speed
    from wanlora.train.ti2v import uses_per_token_timesteps

    spec = VARIANTS[name]
    if "swap_budget" in spec:  # block swap: builds, caps and times itself
        return _reference_swap().run_swap_variant(
            types.SimpleNamespace(**globals()), name, cfg, device, warmup, steps
        )
    from wanlora.train.step import step_functions

    recipe = load_recipe(cfg.get("recipe", "wan22-t2v"))
    dtype = torch.float16
    expert = recipe.experts["low" if "low" in recipe.experts else "main"]
    tokens = token_count(cfg, frames)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    plan = None
    if name == "reference":
        model = build_random_dit(cfg, device, dtype)
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
        torch.manual_seed(0)
        add_lora(model, recipe.lora)
        model.enable_gradient_checkpointing()
    else:
        update = {k: spec[k] for k in ("speed", "compile", "checkpointing", "fp8_storage")}
        update["text_fold"] = spec.get("text_fold", "on")
        training = recipe.training.model_copy(update=dict(update, max_vram_gb=max_vram_gb))
        plan_training = training
        channels = cfg.get("channels", 16)
        shape = DitShape.wan(
            cfg["dim"],
            cfg["ffn_dim"],
            cfg["num_layers"],
            cfg["text_dim"],
            cfg["freq_dim"],
            in_channels=cfg.get("in_channels", channels),
            out_channels=channels,
        )
        # TI2V clips: the step may pass per-token timesteps (an image-to-video item)
        per_token = uses_per_token_timesteps(recipe, latent_shape(cfg, frames)[1])
        plan = plan_speed(
            training, device, dtype, tokens=tokens, shape=shape, rank=16, per_token=per_token
        )
        if spec.get("transposed") is False:
            plan = dataclasses.replace(plan, fp8_transposed=False)
        model = build_random_dit(cfg, device, plan.load_dtype)
        prepare_base(model, plan)
        torch.manual_seed(0)
        add_lora(model, recipe.lora)
        prepare_for_speed(model, plan, device)
        for module in model.modules():  # switch single optimisations back off
            if spec.get("peft_cast") and hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = True
    model.train()
    build_s = time.perf_counter() - t0
    n_ckpt = len(model.blocks) if name == "reference" else len(model.wanlora_checkpointed)
    fused = cuda and not spec.get("foreach")  # as the training loop: fused AdamW on a GPU
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=3e-4, weight_decay=0.1, fused=fused)
    scaler = grad_scaler(device, dtype)
    generator = torch.Generator("cpu").manual_seed(5)
    samples = make_samples(cfg, frames=frames)
    graphed = None
    graph_ok = plan is not None and why_not_graphed(plan_training, 0.0, device, n_ckpt, 1) is None
    if spec.get("graph", True) and graph_ok:  # as the training loop decides
        from wanlora.train.speed.cuda_graph import GraphedStep, set_capturable

        set_capturable(optimizer, device, on=True)
        loss_for = step_functions(recipe)[2]  # the recipe's task: TI2V has its own loss
        graphed = GraphedStep(
            lambda *inputs: loss_for(model, *inputs, dtype, cache_enabled=False),
            lora_parameters(model),
            optimizer,
            scaler,
        )
    weights_gib = torch.cuda.memory_allocated(device) / 2**30 if cuda else 0.0
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    attention = contextlib.nullcontext()
    if spec.get("sdpa") == "cudnn":
        order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]
        order += [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        attention = sdpa_kernel(order, set_priority=True)
    # run(warmup, steps) -> (times, losses): this variant's steps, timed
    run = functools.partial(
        _steps, model, samples, recipe, expert, generator, device, dtype, scaler, optimizer, graphed
    )
    kinds: list[str] = []
    with attention:
        times, losses = run(warmup, steps, kinds)
        profile_text = _profile_steps(run, device) if profile else None
    result = _summary(name, spec, times, losses, warmup, t0, build_s, weights_gib, device, n_ckpt)
    result["max_vram_gb"] = max_vram_gb
    result["cuda_graph"] = graphed is not None
    result["model"] = recipe.task
    result["frames"], result["tokens"] = frames, tokens
    result["step_kinds"] = kinds  # TI2V: which steps trained image-to-video (per-token t)
    if profile_text:
        result["profile"] = profile_text
    if plan is not None:
        result["plan"] = {k: str(v) for k, v in plan.__dict__.items()}
        result["plan_text"] = plan.describe() + (", CUDA-graphed step" if graphed else "")
        if plan.predicted_peak is not None:
            result["predicted_peak_gib"] = plan.predicted_peak / 2**30
    return result


def _reference_swap():
    return _sibling("reference_swap")


def _sibling(name: str) -> types.ModuleType:
    """benchmarks/NAME.py (this script may run as __main__ or be loaded by path)."""
    if str(Path(__file__).parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).parent))
    return importlib.import_module(name)


def _steps(
    model,
    samples,
    recipe,
    expert,
    generator,
    device,
    dtype,
    scaler,
    optimizer,
    graphed,
    warmup,
    steps,
    kinds: list[str] | None = None,
):
    from wanlora.train.speed.text_fold import text_rows
    from wanlora.train.step import step_functions, training_step

    model_inputs = step_functions(recipe)[1]
    cuda = device.type == "cuda"
    times, losses = [], []
    for step in range(warmup + steps):
        if kinds is not None:  # what this step trains: for the memory plan's per-token term
            kinds.append(_step_kind(samples, [step % len(samples)], recipe, expert, generator))
        # a graphed step's working memory is allocated once, at capture (in the warm-up), and
        # replays allocate nothing: a peak reset after the warm-up would show only the weights
        if cuda and step == warmup and graphed is None:
            torch.cuda.reset_peak_memory_stats(device)
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        batch = [step % len(samples)]
        if graphed is not None:  # the whole step (optimiser included) replayed from a graph
            rows = text_rows(model, [samples[i][1].shape[0] for i in batch])
            inputs = model_inputs(samples, batch, recipe, expert, generator, device, rows)
            loss = graphed(*inputs).item()
        else:
            loss = training_step(
                model, samples, batch, recipe, expert, generator, device, dtype, scaler
            )
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        losses.append(loss)
    return times, losses


def _step_kind(samples, batch, recipe, expert, generator) -> str:
    """"i2v" when this TI2V step's draws make an image-to-video item (per-token timesteps),
    else "t2v"; replayed on a copy of the generator, so the step draws the same."""
    if recipe.task != "ti2v-5B":
        return "t2v"
    from wanlora.train.ti2v import draws, image_to_video_items

    replay = torch.Generator("cpu").set_state(generator.get_state())
    coins = draws(samples, batch, recipe, expert, replay)[2]
    latent_frames = samples[batch[0]][0].shape[1]
    i2v = image_to_video_items(coins, latent_frames, recipe.training.ti2v_i2v_share)
    return "i2v" if bool(i2v.any()) else "t2v"


# kernel name fragments -> what the time went to (first match wins)
KERNEL_KINDS = [
    ("attention", ("flash", "fmha", "attention", "cudnn")),
    ("fp8 matmul", ("e4m3", "e5m2", "f8f6f4", "fp8", "qgmma", "scaled_mm")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "sm90", "cublas", "splitk", "aten::mm")),
    ("compiled fused (triton)", ("triton",)),
    ("copy / cast", ("copy", "memcpy", "memset", "cast")),
    ("eager elementwise", ("elementwise", "vectorized", "unrolled")),
    ("reduction", ("reduce",)),
]


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def _profile_steps(run, device) -> str:
    """Two more steps under torch.profiler: device time per kernel kind, the top kernels, and
    the matrix products by shape (tells the LoRA's rank-16 products from the base ones)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    steps = 2
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        times, _ = run(0, steps)
    try:
        text = _profile_text(prof, steps, cuda, DeviceType)
    except Exception as exc:  # a summary bug must not cost the timing
        text = f"profile summary failed: {type(exc).__name__}: {exc}"
    if cuda:
        try:
            busy = _busy_us(prof, DeviceType) / steps / 1e3
            wall = sum(times) / steps * 1e3
            text = (
                f"GPU busy {busy:.1f} ms of {wall:.1f} ms per step (idle {1 - busy / wall:.1%}; "
                f"profiled steps run slower than timed ones)\n" + text
            )
        except Exception as exc:
            text = f"busy time failed: {type(exc).__name__}: {exc}\n" + text
    return text


def _busy_us(prof, DeviceType) -> float:
    """Microseconds in which at least one kernel ran (union of the kernels' intervals)."""
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA
        and e.time_range.end > e.time_range.start
        and not getattr(e, "is_user_annotation", False)  # ranges like "## Call CompiledFxGraph"
        and not e.name.startswith(("##", "Optimizer.", "ProfilerStep"))
    )
    busy, cur_start, cur_end = 0.0, None, None
    for start, end in spans:
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                busy += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        busy += cur_end - cur_start
    return busy


def _profile_text(prof, steps, cuda, DeviceType) -> str:
    by_kind: dict[str, float] = {}
    kernels = []
    for event in prof.key_averages():
        if cuda:  # the kernels themselves (CPU ops would count their kernels twice)
            if event.device_type != DeviceType.CUDA or event.key.startswith(("##", "Optimizer.")):
                continue
            us = event.device_time_total
        else:
            us = event.self_cpu_time_total
        if not us or event.key.startswith("ProfilerStep"):
            continue
        kind = kernel_kind(event.key)
        by_kind[kind] = by_kind.get(kind, 0.0) + us
        kernels.append((us, event.count, kind, event.key))
    total = sum(by_kind.values())
    what = "GPU kernel" if cuda else "CPU op"
    lines = [f"{what} time per step: {total / steps / 1e3:.1f} ms"]
    for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {kind:26s} {us / steps / 1e3:8.1f} ms  {us / total:6.1%}")
    lines.append("top kernels (ms per step, calls per step, kind, name):")
    for us, count, kind, key in sorted(kernels, reverse=True)[:30]:
        lines.append(f"  {us / steps / 1e3:8.2f} {count // steps:6d}  {kind:22s} {key[:110]}")
    products = []
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key in ("aten::mm", "aten::addmm", "aten::_scaled_mm", "aten::bmm"):
            us = event.device_time_total if cuda else event.cpu_time_total
            products.append((us, event.count, event.key, str(event.input_shapes)[:100]))
    lines.append("matrix products by shape (ms per step, calls per step, op, input shapes):")
    for us, count, key, shapes in sorted(products, reverse=True)[:25]:
        lines.append(f"  {us / steps / 1e3:8.2f} {count // steps:6d}  {key:16s} {shapes}")
    return "\n".join(lines)


def _summary(name, spec, times, losses, warmup, t0, build_s, weights_gib, device, n_ckpt):
    cuda = device.type == "cuda"
    timed = times[warmup:]
    result = {
        "variant": name,
        "desc": spec["desc"],
        "s_per_step": statistics.median(timed),
        "s_min": min(timed),
        "s_max": max(timed),
        "first_step_s": times[0],
        "build_s": build_s,
        "weights_gib": weights_gib,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else 0.0,
        "reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30 if cuda else 0.0,
        "blocks_recomputed": n_ckpt,
        "losses": losses,
        "times": times,
    }
    return result


def measure_peaks(device: torch.device) -> dict:
    """bf16 and fp8 (torch._scaled_mm) matmul rates at 8192^3, random data, median of 20."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
    one = torch.tensor(1.0, device=device)

    def bench(fn):
        for _ in range(3):
            fn()
        out = []
        for _ in range(20):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            out.append(s.elapsed_time(e) / 1e3)
        return 2 * n**3 / statistics.median(out) / 1e12

    bf16 = bench(lambda: a @ b)
    ah, bh = a.half(), b.half()
    fp16 = bench(lambda: ah @ bh)
    fp8 = bench(
        lambda: torch._scaled_mm(a8, b8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    )
    return {"bf16_tflops": bf16, "fp8_tflops": fp8, "fp16_tflops": fp16}


def table(results: list[dict], peaks: dict, flops: dict, ref_s: float = 1.258) -> str:
    useful = flops["useful"] / 1e12
    lines = [
        f"model FLOPs/step: forward {flops['forward'] / 1e12:.1f} TFLOP, useful (fwd+bwd) "
        f"{useful:.1f} TFLOP; measured peak bf16 {peaks.get('bf16_tflops', 0):.0f}, "
        f"fp8 {peaks.get('fp8_tflops', 0):.0f} TFLOP/s",
        "| variant | what | plan | s/step | peak GiB (predicted) | recomputed blocks | MFU (bf16 peak) | vs reference 1.258 | vs in-run reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = next(
        (r["s_per_step"] for r in results if r["variant"] == "reference" and "error" not in r), None
    )
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | FAILED: {r['error'][:80]} | | | | | | | |")
            continue
        s = r["s_per_step"]
        mfu = useful / s / peaks["bf16_tflops"] if peaks.get("bf16_tflops") else float("nan")
        rel = f"{base / s:.2f}x" if base else "-"
        pred = r.get("predicted_peak_gib")
        peak = f"{r['peak_gib']:.1f}" + (f" ({pred:.1f})" if pred is not None else "")
        cap = r.get("max_vram_gb")
        plan = r.get("plan_text", "-") + (f" [cap {cap:g} GiB]" if cap else "")
        lines.append(
            f"| {r['variant']} | {r['desc']} | {plan} | {s:.3f} | {peak} | "
            f"{r['blocks_recomputed']} | {mfu:.0%} | {ref_s / s:.2f}x | {rel} |"
        )
    return "\n".join(lines)


def loss_diffs(results: list[dict]) -> str:
    """Per-step and mean-loss relative differences of variant pairs (compare_losses.py)."""
    compare_losses = _sibling("compare_losses")
    by = {r["variant"]: r for r in results if "error" not in r}
    lines = []
    for a, b in [
        ("exact", "fast"),
        ("exact-nofold", "exact"),  # the text fold: same maths, rounding only
        ("fast-nofold", "fast"),
        ("exact-nofold", "fast-nofold"),
        ("exact-lowmem", "fast-lowmem"),
        ("reference", "exact"),
        ("reference", "exact-lowmem"),
        ("exact-eager", "exact-lowmem"),
        ("exact-lowmem", "exact-swap16"),  # the same plan with blocks streamed: bit-identical
        ("exact-lowmem", "exact-swap12"),
        ("exact-lowmem", "exact-swap8"),
        ("reference", "reference-swap16"),
    ]:
        if a in by and b in by:
            compared = compare_losses.compare(by[a]["losses"], by[b]["losses"])
            lines.append(compare_losses.describe(a, b, compared))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny dims (CPU smoke test)")
    p.add_argument("--model", choices=sorted(MODELS), default="t2v-a14b", help="which DiT")
    p.add_argument(
        "--frames", type=int, default=1, help="video frames a sample (4n+1; ti2v-5b: 1 or 121; i2v-a14b: 33 or 81)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variant", help="run one variant in this process, print JSON")
    p.add_argument("--all", action="store_true")
    p.add_argument("--variants", default=",".join(DEFAULT_ORDER))
    p.add_argument("--inline", action="store_true", help="all variants in this process")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument(
        "--profile",
        default="",
        help="comma-separated variants to profile for 2 more steps (GPU time per kernel kind)",
    )
    p.add_argument(
        "--max-vram",
        type=float,
        default=None,
        help="GiB: cap each variant's CUDA allocator there (set_per_process_memory_fraction, "
        "before any allocation) and plan storage/recompute for that budget",
    )
    args = p.parse_args(argv)
    if args.max_vram is not None and not args.max_vram > 0:
        p.error(f"--max-vram must be a positive number of GiB (got {args.max_vram})")
    if (args.frames - 1) % 4:
        p.error(f"--frames must be 4n+1 (got {args.frames})")
    full, tiny = MODELS[args.model]
    cfg = tiny if args.tiny else full
    device = torch.device(args.device)
    tokens = token_count(cfg, args.frames)

    if args.variant:
        try:
            cap_memory(device, args.max_vram)
            profile = args.variant in args.profile.split(",")
            result = run_variant(
                args.variant, cfg, device, args.warmup, args.steps, args.max_vram, profile,
                args.frames,
            )
        except Exception as exc:  # reported, not fatal: the other variants still run
            import traceback

            traceback.print_exc()
            result = {"variant": args.variant, "error": f"{type(exc).__name__}: {exc}"}
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    peaks = measure_peaks(device) if device.type == "cuda" else {}
    print("peaks", peaks, flush=True)
    results = []
    for name in args.variants.split(","):
        if args.inline:
            try:
                results.append(
                    run_variant(
                        name, cfg, device, args.warmup, args.steps, args.max_vram,
                        frames=args.frames,
                    )
                )
            except Exception as exc:
                results.append({"variant": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            name,
            "--device",
            args.device,
            "--warmup",
            str(args.warmup),
            "--steps",
            str(args.steps),
        ]
        cmd += ["--tiny"] if args.tiny else []
        cmd += ["--model", args.model, "--frames", str(args.frames)]
        cmd += ["--max-vram", str(args.max_vram)] if args.max_vram is not None else []
        cmd += ["--profile", args.profile] if args.profile else []
        env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=args.timeout
            )
            out = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else str(exc.stdout)
            out += "\nTIMEOUT"
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.log").write_text(out)
        line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
        res = json.loads(line[7:]) if line else {"variant": name, "error": out.strip()[-300:]}
        res["process_s"] = time.perf_counter() - t0
        results.append(res)
        skip = ("losses", "times", "profile")
        print(name, {k: v for k, v in res.items() if k not in skip}, flush=True)
        if res.get("profile"):
            print(res["profile"], flush=True)
            if args.out:
                (args.out / f"{name}.profile.txt").write_text(res["profile"] + "\n")
        if args.out:  # after each variant: a later timeout keeps what finished
            (args.out / "partial.json").write_text(json.dumps({"peaks": peaks, "results": results}))
    flops = model_flops(cfg, tokens)
    summary = table(results, peaks, flops) + "\n" + loss_diffs(results)
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cmd": " ".join(sys.argv),
        "tokens": tokens,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(
            json.dumps({"meta": meta, "peaks": peaks, "flops": flops, "results": results}, indent=1)
        )
        (args.out / "table.md").write_text(summary + "\n")
    print(meta)
    print(summary)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
