"""Block swap in the step benchmark: a reference-like synchronous swap, and the library's own.

`ReferenceBlockSwap` is roughly what the reference trainer's `--blocks_to_swap N` does (facts
read from musubi-tuner's ModelOffloader, no code taken): the last N blocks' weights live in
host memory; before such a block runs, the compute stream is synchronised, the block that ran
before it goes back to the host (GPU -> host copy, although the weights are frozen) and this
block's weights come to the GPU. The reference does the two copies in a worker thread on a
side stream; this one does them inline and waits for them, so it is the no-overlap end of the
reference's behaviour: expect it somewhat slower than the reference's own numbers (issue 23:
16 blocks 1.755 s/step, 27 blocks 1.931 s, 38 blocks 2.664 s, none 1.103 s on the H200).
Eager only, with diffusers' layerwise fp8 casting (the `reference` variant of bench_step.py):
those hooks cast every weight to a new 16-bit tensor for its product, so autograd never holds
the moved weight itself.

`run_swap_variant` runs one bench_step variant with a block swap: the model is built on the
GPU uncapped (a 14B expert's fp8 weights alone are 13.8 GiB), the blocks are moved to host
memory, then the allocator is capped at the variant's budget and the steps are timed. It
reports the plan, the bytes copied host->GPU per step (counted) and the host memory.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from wanlora.train.speed.block_swap import block_weights


class ReferenceBlockSwap:
    """The last `blocks` blocks' linear weights on the host, one block on the GPU at a time."""

    def __init__(self, model: nn.Module, blocks: int, device: torch.device):
        n = len(model.blocks)
        self.indices = list(range(n - min(blocks, n), n))
        self.device = device
        self.cuda = device.type == "cuda"
        self.current: int | None = None
        self.moves = 0  # blocks moved to the GPU
        self.bytes = 0  # bytes moved either way
        self._weights = {i: block_weights(model.blocks[i]) for i in self.indices}
        self._host: dict[int, list[torch.Tensor]] = {}
        for i, weights in self._weights.items():
            host = [torch.empty_like(w, device="cpu") for w in weights]
            if self.cuda:  # staging in pinned memory, as the reference (rounded: fine here)
                host = [h.pin_memory() for h in host]
            for h, w in zip(host, weights, strict=True):
                h.copy_(w.detach())
                w.data = h
            self._host[i] = host
        self._handles = [
            model.blocks[i].register_forward_pre_hook(self._hook(i)) for i in self.indices
        ]

    def _hook(self, i: int):
        def before_block(_block, _args):
            if self.current == i:
                return
            if self.cuda:  # the reference waits for the compute before each swap
                torch.cuda.current_stream(self.device).synchronize()
            if self.current is not None:  # the block that ran goes back to the host
                for h, w in zip(self._host[self.current], self._weights[self.current], strict=True):
                    h.copy_(w.data)
                    w.data = h
                    self.bytes += h.numel() * h.element_size()
            for h, w in zip(self._host[i], self._weights[i], strict=True):
                w.data = h.to(self.device, non_blocking=True)
                self.bytes += h.numel() * h.element_size()
            if self.cuda:
                torch.cuda.current_stream(self.device).synchronize()
            self.current = i
            self.moves += 1

        return before_block

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def host_memory_gib() -> dict[str, float]:
    """This process's resident host memory now (RssAnon: its own) and at peak (VmHWM)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return {}
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    kib = {k: int(v.split()[0]) for k, v in fields.items() if v.strip().endswith("kB")}
    return {
        "rss_anon_gib": kib.get("RssAnon", 0) / 2**20,
        "vm_hwm_gib": kib.get("VmHWM", 0) / 2**20,
    }


def run_swap_variant(bench, name: str, cfg: dict, device: torch.device, warmup: int, steps: int):
    """One swap variant of bench_step (`bench`: its functions) -> its result dict."""
    from wanlora.lora.inject import add_lora, lora_parameters
    from wanlora.models.precision import grad_scaler
    from wanlora.recipes import load_recipe
    from wanlora.train.speed.block_swap import BlockSwap
    from wanlora.train.speed.prepare import prepare_base, prepare_for_speed
    from wanlora.train.speed.swap_plan import PCIE4_X16_BYTES_PER_S, plan_with_swap

    spec = bench.VARIANTS[name]
    budget = spec["swap_budget"]
    recipe = load_recipe("wan22-t2v")
    dtype = torch.float16
    tokens = (cfg["latent"] // 2) ** 2
    cuda = device.type == "cuda"
    if cuda:  # built uncapped, capped once the swapped blocks have left the GPU
        torch.cuda.set_per_process_memory_fraction(
            1.0, device.index if device.index is not None else torch.cuda.current_device()
        )
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    plan = swap = None
    if "reference_swap" in spec:
        model = bench.build_random_dit(cfg, device, dtype)
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
        torch.manual_seed(0)
        add_lora(model, recipe.lora)
        model.enable_gradient_checkpointing()
        swap = ReferenceBlockSwap(model, spec["reference_swap"], device)
        indices = swap.indices
        plan_text = f"reference-like swap of the last {len(indices)} blocks, full ckpt, eager"
    else:
        update = {k: spec[k] for k in ("speed", "compile", "checkpointing", "fp8_storage")}
        update["text_fold"] = spec.get("text_fold", "on")  # as bench_step's resident variants
        training = recipe.training.model_copy(update=dict(update, max_vram_gb=budget))
        shape = bench_shape(cfg)
        plan = plan_with_swap(training, device, dtype, tokens=tokens, shape=shape, rank=16)
        model = bench.build_random_dit(cfg, device, plan.load_dtype)
        prepare_base(model, plan)
        torch.manual_seed(0)
        add_lora(model, recipe.lora)
        prepare_for_speed(model, plan, device)
        # on the CPU there is no budget to plan for: the smoke test streams every block
        indices = plan.swap_indices or (() if cuda else tuple(range(len(model.blocks))))
        swap = BlockSwap(model, list(indices), device, ring=plan.ring)
        plan_text = plan.describe()
        if indices and not plan.blocks_swapped:
            plan_text += f" (CPU smoke test: all {len(indices)} blocks streamed)"
    model.train()
    if cuda:
        torch.cuda.empty_cache()
        bench.cap_memory(device, budget)
        torch.cuda.reset_peak_memory_stats(device)
    build_s = time.perf_counter() - t0
    weights_gib = torch.cuda.memory_allocated(device) / 2**30 if cuda else 0.0
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=3e-4, weight_decay=0.1, fused=cuda)
    scaler = grad_scaler(device, dtype)
    generator = torch.Generator("cpu").manual_seed(5)
    samples = bench.make_samples(cfg)
    expert = recipe.experts["low"]
    counted = swap.stats if isinstance(swap, BlockSwap) else swap
    at_forward: list[int] = []  # bytes copied so far, at each step's forward
    hook = model.register_forward_pre_hook(lambda *_: at_forward.append(counted.bytes))
    times, losses = bench._steps(
        model, samples, recipe, expert, generator, device, dtype, scaler, optimizer, None,
        warmup, steps,
    )  # fmt: skip
    hook.remove()
    at_forward.append(counted.bytes)
    per_step = (at_forward[-1] - at_forward[warmup]) / max(steps, 1)
    n_ckpt = len(model.blocks)  # every variant here recomputes every block
    result = bench._summary(
        name, spec, times, losses, warmup, t0, build_s, weights_gib, device, n_ckpt
    )
    result.update(
        max_vram_gb=budget,
        cuda_graph=False,  # recompute: never graphed
        blocks_swapped=len(indices),
        swap_indices=list(indices),
        h2d_gb_per_step=per_step / 1e9 if plan is not None else None,
        moved_gb_per_step=per_step / 1e9,  # reference-like: both directions
        plan_text=plan_text,
        **host_memory_gib(),
    )
    if plan is not None:
        result["plan"] = {k: str(v) for k, v in plan.__dict__.items()}
        result["predicted_peak_gib"] = (
            None if plan.predicted_peak is None else plan.predicted_peak / 2**30
        )
        result["planned_h2d_gb_per_step"] = plan.h2d_bytes_per_step / 1e9
        result["host_gib_planned"] = None if plan.host_bytes is None else plan.host_bytes / 2**30
        # the measured step as the compute time, projected onto a PCIe 4.0 x16 link
        result["projected_s_pcie4"] = plan.projected_step_seconds(
            result["s_per_step"], PCIE4_X16_BYTES_PER_S
        )
    return result


def bench_shape(cfg: dict):
    from wanlora.train.speed.memory_plan import DitShape

    return DitShape.wan(
        cfg["dim"], cfg["ffn_dim"], cfg["num_layers"], cfg["text_dim"], cfg["freq_dim"]
    )
