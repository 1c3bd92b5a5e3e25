"""Training speed: compiled blocks, a recompute policy, fp8 weight storage, opt-in fp8 compute.

Everything here is chosen by `training.speed`, `training.compile`, `training.checkpointing`
and `training.fp8_storage` (recipes/schema.py). The defaults keep the recipe's numerics:

- fp8 weight storage (`Fp8Linear`): the big block linears keep their fp8-rounded weights in
  float8_e4m3fn and upcast them to the compute dtype inside `forward`. fp8 values are exact
  in fp16/bf16, so this is bit-identical to holding them in 16 bits, at half the memory.
  Unlike diffusers' layerwise-casting hooks it is a plain module, so `torch.compile` takes it.
- compiled blocks: each transformer block is compiled in place (`nn.Module.compile`:
  parameter names, LoRA names and saved files are unchanged). The 40 blocks share one
  compiled graph. Same precision formats; fused elementwise kernels round a little
  differently from eager mode (benchmarks/RESULTS.md measures the loss curves).
- recompute policy: gradient checkpointing of every block (the reference), of none, or of as
  few as free GPU memory needs ("auto"). Recomputation does not change any value.
- `speed = "fast"` (opt-in, changes numerics): the block linears' matrix products run in fp8
  on the tensor cores (`torch._scaled_mm`): activations and output gradients are quantised
  per tensor to e4m3 / e5m2 with an amax scale; weights are the fp8-rounded values themselves.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
E4M3_MAX = torch.finfo(E4M3).max  # 448
E5M2_MAX = torch.finfo(E5M2).max  # 57344

# Activation memory of one transformer block kept for backward (no recompute), bytes per
# token: measured 0.97 GiB per block at 3600 tokens for the 14B expert, uncompiled
# (shared/PERF_ANCHOR.md), i.e. ~20 bytes per model-width channel + ~12 per ffn channel.
ACT_BYTES_PER_TOKEN_DIM = 20
ACT_BYTES_PER_TOKEN_FFN = 12
# what "auto" leaves free on the card for the allocator, the optimiser and transients
AUTO_RESERVE_BYTES = 6 * 2**30


# --- fp8 linear ------------------------------------------------------------------------
def _amax_scale(x: torch.Tensor, fmax: float) -> torch.Tensor:
    """Per-tensor scale (float32 scalar) so that x / scale fits the fp8 range."""
    amax = x.detach().abs().amax().float()
    return torch.clamp(amax, min=1e-12) / fmax


def _to_fp8(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, fmax: float) -> torch.Tensor:
    return (x.float() / scale).clamp(-fmax, fmax).to(dtype)


class _Fp8MatmulFn(torch.autograd.Function):
    """y = x @ (w8 * w_scale)^T with fp8 tensor-core products forward and backward.

    The weight is frozen (no weight gradient). Backward computes dx = dy @ W in fp8 too
    (dy quantised to e5m2). Shapes: x (M, K), w8 (N, K) float8_e4m3fn.
    """

    @staticmethod
    def forward(ctx, x, w8, w_scale, out_dtype):
        x_scale = _amax_scale(x, E4M3_MAX)
        x8 = _to_fp8(x, x_scale, E4M3, E4M3_MAX)
        y = torch._scaled_mm(x8, w8.t(), scale_a=x_scale, scale_b=w_scale, out_dtype=out_dtype)
        ctx.save_for_backward(w8, w_scale)
        ctx.x_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx, grad):
        w8, w_scale = ctx.saved_tensors
        g_scale = _amax_scale(grad, E5M2_MAX)
        g8 = _to_fp8(grad, g_scale, E5M2, E5M2_MAX)
        w_col = w8.t().contiguous().t()  # (N, K) column-major, as _scaled_mm's mat2 must be
        dx = torch._scaled_mm(g8, w_col, scale_a=g_scale, scale_b=w_scale, out_dtype=ctx.x_dtype)
        return dx, None, None, None


class Fp8Linear(nn.Linear):
    """A frozen Linear whose weight is stored in float8_e4m3fn (with a float32 scale).

    forward: the weight is upcast to the compute dtype (autocast's, else `compute_dtype`)
    and used as an ordinary 16-bit weight -- bit-identical to a 16-bit copy of the same fp8
    values when the scale is 1. With `fp8_compute` the product itself runs in fp8.
    A subclass of nn.Linear, so peft puts its LoRA on it like on any Linear; `compute_dtype`
    is also what peft reads to place the LoRA weights (as for a 16-bit base layer).
    """

    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype, fp8_compute: bool = False):
        nn.Module.__init__(self)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach()
        if weight.dtype == E4M3 or _is_fp8_exact(weight):
            scale = 1.0
            w8 = weight.to(E4M3)
        else:  # not fp8-valued (fp8_base off): a per-tensor scale; changes the values
            scale = max(weight.abs().amax().float().item(), 1e-12) / E4M3_MAX
            w8 = (weight.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
        self.weight = nn.Parameter(w8, requires_grad=False)
        self.register_buffer(
            "weight_scale", torch.tensor(scale, dtype=torch.float32, device=weight.device)
        )
        self.unit_scale = scale == 1.0
        bias = linear.bias
        self.bias = (
            None
            if bias is None
            else nn.Parameter(bias.detach().to(compute_dtype), requires_grad=False)
        )
        self.compute_dtype = compute_dtype
        self.fp8_compute = fp8_compute

    def _dtype(self, x: torch.Tensor) -> torch.dtype:
        if torch.is_autocast_enabled(x.device.type):
            return torch.get_autocast_dtype(x.device.type)
        return self.compute_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype(x)
        if self.fp8_compute and x.shape[-1] % 16 == 0 and self.out_features % 16 == 0:
            flat = x.reshape(-1, x.shape[-1])
            if flat.shape[0] % 16 == 0:
                y = _Fp8MatmulFn.apply(flat, self.weight, self.weight_scale, dtype)
                if self.bias is not None:
                    y = y + self.bias.to(dtype)
                return y.reshape(*x.shape[:-1], self.out_features)
        weight = self.weight.to(dtype)
        if not self.unit_scale:
            weight = weight * self.weight_scale.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(x.to(dtype), weight, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"fp8_compute={self.fp8_compute}, unit_scale={self.unit_scale}"
        )


def _is_fp8_exact(weight: torch.Tensor) -> bool:
    """True when every value survives a round trip through float8_e4m3fn."""
    return bool(torch.equal(weight.to(E4M3).to(weight.dtype), weight))


# --- the plan ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeedPlan:
    """What prepare_base / prepare_for_speed do, decided once from the settings and card."""

    compute_dtype: torch.dtype
    fp8_storage: bool  # block linears held in float8_e4m3fn
    fp8_compute: bool  # block linears multiply in fp8 (speed = "fast")
    compile: bool
    checkpointing: str  # "full" | "none" | "auto"
    tokens: int | None = None  # tokens per sample, for "auto" checkpointing

    @property
    def load_dtype(self) -> torch.dtype:
        """The dtype to load the DiT in: fp8 when the block linears will be fp8 anyway."""
        return E4M3 if self.fp8_storage else self.compute_dtype


def plan_speed(
    training,
    device: torch.device,
    compute_dtype: torch.dtype,
    *,
    weight_count: int | None = None,
    tokens: int | None = None,
) -> SpeedPlan:
    """Resolve the "auto" settings of `training` (a TrainingSettings) for this device.

    weight_count: the DiT's number of weights (for fp8_storage = "auto"); tokens: tokens per
    training sample (for checkpointing = "auto").
    """
    cuda = device.type == "cuda"
    fast = training.speed == "fast"
    fp8_base = training.fp8_base
    compile_ = {"on": True, "off": False, "auto": cuda}[training.compile]

    if training.fp8_storage == "on":
        fp8_storage = True
    elif training.fp8_storage == "off" or not fp8_base or not cuda:
        fp8_storage = False
    else:  # 16-bit copies of the fp8 values when they fit with room for activations
        free, _total = torch.cuda.mem_get_info(device)
        need16 = 2 * (weight_count or 0) + AUTO_RESERVE_BYTES + 8 * 2**30
        fp8_storage = need16 > free
    if fast:
        # the fp8 product needs fp8 weights; the block linears are fp8 in memory anyway
        fp8_storage = True

    if not training.gradient_checkpointing:
        checkpointing = "none"
    elif training.checkpointing == "auto" and not cuda:
        checkpointing = "full"
    else:
        checkpointing = training.checkpointing
    return SpeedPlan(compute_dtype, fp8_storage, fast, compile_, checkpointing, tokens)


# --- preparing the model -------------------------------------------------------------------
def _block_linear_names(model: nn.Module) -> list[str]:
    from .lora import lora_target_modules

    return lora_target_modules(model)


def prepare_base(model: nn.Module, plan: SpeedPlan) -> nn.Module:
    """Before add_lora: fp8 block linears (storage and/or compute) and 16-bit everything else.

    A model loaded in float8_e4m3fn (plan.load_dtype) gets every tensor other than the block
    linears' weights upcast to the compute dtype (the time path stays float32), so it holds
    exactly what a 16-bit load of the fp8-rounded file holds.
    """
    if plan.fp8_storage or plan.fp8_compute:
        for name in _block_linear_names(model):
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            linear = getattr(parent, leaf)
            if isinstance(linear, Fp8Linear):
                continue
            setattr(parent, leaf, Fp8Linear(linear, plan.compute_dtype, plan.fp8_compute))
    for module in model.modules():
        if isinstance(module, Fp8Linear):
            continue
        for leaf, param in list(module._parameters.items()):
            if param is not None and param.dtype in (E4M3, E5M2):
                module._parameters[leaf] = nn.Parameter(
                    param.data.to(plan.compute_dtype), requires_grad=False
                )
    return model


def activation_bytes_per_block(model: nn.Module, tokens: int) -> int:
    """Estimated activation memory one un-checkpointed block keeps for backward."""
    block = model.blocks[0]
    dim = block.attn1.to_q.in_features if hasattr(block.attn1.to_q, "in_features") else 0
    ffn_layer = block.ffn.net[2]
    ffn = getattr(ffn_layer, "in_features", 0)
    return tokens * (ACT_BYTES_PER_TOKEN_DIM * dim + ACT_BYTES_PER_TOKEN_FFN * ffn)


def blocks_to_checkpoint(model: nn.Module, plan: SpeedPlan, device: torch.device) -> list[int]:
    """Indices of the blocks to recompute in backward, by plan.checkpointing."""
    n = len(model.blocks)
    if plan.checkpointing == "none":
        return []
    if plan.checkpointing == "full" or plan.tokens is None or device.type != "cuda":
        return list(range(n))
    free, _total = torch.cuda.mem_get_info(device)
    per_block = max(activation_bytes_per_block(model, plan.tokens), 1)
    keep = int(max(0, free - AUTO_RESERVE_BYTES) // per_block)  # blocks that need no recompute
    n_ckpt = max(0, n - keep)
    # spread the recomputed blocks evenly over the depth
    return sorted({math.floor(i * n / n_ckpt) for i in range(n_ckpt)}) if n_ckpt else []


def set_checkpointing(model: nn.Module, indices: list[int]) -> None:
    """Gradient checkpointing of exactly the blocks `indices` (none: checkpointing off)."""
    if not indices:
        if getattr(model, "is_gradient_checkpointing", False):
            model.disable_gradient_checkpointing()
        return
    chosen = {id(model.blocks[i]) for i in indices}

    def checkpoint_some(block, *args):
        if id(block) in chosen:
            return checkpoint(block.__call__, *args, use_reentrant=False)
        return block(*args)

    model.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint_some)


def compile_blocks(model: nn.Module) -> None:
    """Compile each transformer block in place (regional compilation: one shared graph)."""
    import torch._dynamo

    cfg = torch._dynamo.config
    cfg.cache_size_limit = max(cfg.cache_size_limit, 64)
    cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 512)
    for block in model.blocks:
        block.compile()


def prepare_for_speed(model: nn.Module, plan: SpeedPlan, device: torch.device) -> nn.Module:
    """After add_lora: the recompute policy and compiled blocks. Returns the same model."""
    indices = blocks_to_checkpoint(model, plan, device)
    set_checkpointing(model, indices)
    model.wanlora_checkpointed = indices  # for logs and benchmarks
    if plan.compile:
        compile_blocks(model)
    log.info(
        "speed: fp8 storage %s, fp8 compute %s, compiled %s, %d/%d blocks recomputed",
        plan.fp8_storage,
        plan.fp8_compute,
        plan.compile,
        len(indices),
        len(model.blocks),
    )
    return model


def dit_weight_count(path: str | Path) -> int:
    """Number of weights in a DiT file, from its header."""
    from ..models.files import read_safetensors_header

    return sum(math.prod(shape) for _dtype, shape in read_safetensors_header(path).values())


def tokens_for_resolution(resolution: tuple[int, int], frames: int = 1) -> int:
    """Tokens per sample: VAE stride 8 x patch 2 = 16 pixels a token side, per latent frame."""
    width, height = resolution
    return (width // 16) * (height // 16) * frames
