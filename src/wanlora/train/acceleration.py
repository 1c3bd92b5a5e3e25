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
  few as the memory budget needs ("auto"). Recomputation does not change any value.
- memory budget (`training.max_vram_gb`, `wanlora train --max-vram`; default: the card's free
  memory): `plan_speed` picks the storage (16-bit or fp8 copies of the fp8 values) and the
  number of recomputed blocks from ONE memory model (`predict_peak_bytes`, calibrated on the
  H100 measurements in benchmarks/RESULTS.md) so the predicted peak stays under the budget
  minus a margin. `wanlora doctor` reports the same plan. Block swapping (weights streamed
  from host memory) is not implemented: the 14B recipe at 960x960 fits 24 GiB without it.
- `speed = "fast"` (opt-in, changes numerics): the block linears' matrix products run in fp8
  on the tensor cores (`torch._scaled_mm`): activations and output gradients are quantised
  per tensor to e4m3 / e5m2 with an amax scale; weights are the fp8-rounded values themselves.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..device_memory import available_bytes

log = logging.getLogger(__name__)

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
E4M3_MAX = torch.finfo(E4M3).max  # 448
E5M2_MAX = torch.finfo(E5M2).max  # 57344

GiB = 2**30
# --- the memory model (one source of truth: plan_speed, blocks_to_checkpoint, doctor) -------
# Activation memory of one transformer block kept for backward (no recompute), bytes per
# token: measured ~0.97 GiB per block at 3600 tokens for the 14B expert, eager
# (shared/PERF_ANCHOR.md: 66.8 GiB peak, 16-bit weights, no recompute), i.e. ~22 bytes per
# model-width channel + ~13 per ffn channel; compiled blocks keep less (57.0 GiB peak in
# benchmarks/RESULTS.md `exact` once peft's float32 copies of the LoRA inputs are gone (59.9
# before): ~0.73 GiB per block), hence COMPILED_ACT_FACTOR.
ACT_BYTES_PER_TOKEN_DIM = 22
ACT_BYTES_PER_TOKEN_FFN = 13
COMPILED_ACT_FACTOR = 0.75
# in a mixed plan (some blocks recomputed, some not) a kept block costs more: measured 23.0
# GiB for 35/40 recomputed under a 24 GiB cap (RESULTS.md, 2026-11-25, with peft's LoRA-input
# casts), i.e. ~1.07 GiB per kept block against ~0.78 with no recompute at all; 21.4 GiB for
# 36/40 without the casts (21.5 predicted). Not understood (backward transients of a kept
# block next to a rebuilt one?); taken as measured.
MIXED_KEPT_FACTOR = 1.36
CKPT_INPUT_BYTES_PER_TOKEN_DIM = 2  # a recomputed block keeps only its 16-bit input
LORA_STATE_BYTES = 16  # per LoRA parameter: float32 weight, gradient, AdamW's two moments
# optimiser/loss transients, text context, time embedding: calibrated so the model gives the
# measured 17.7 GiB of `exact-lowmem` (fp8 storage, 40/40 recomputed, compiled)
TRANSIENT_BYTES = GiB // 2
# kept free under the budget: CUDA context, allocator fragmentation, estimate error
MARGIN_MIN_BYTES = 3 * GiB // 2
MARGIN_FRACTION = 0.08
# what the runtime "auto" fallback (no model shape known at planning time) leaves free
AUTO_RESERVE_BYTES = 6 * GiB


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
    def forward(ctx, x, w8, w8_t, w_scale, out_dtype):
        x_scale = _amax_scale(x, E4M3_MAX)
        x8 = _to_fp8(x, x_scale, E4M3, E4M3_MAX)
        y = torch._scaled_mm(x8, w8.t(), scale_a=x_scale, scale_b=w_scale, out_dtype=out_dtype)
        ctx.save_for_backward(w8, w8_t, w_scale)
        ctx.x_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx, grad):
        w8, w8_t, w_scale = ctx.saved_tensors
        g_scale = _amax_scale(grad, E5M2_MAX)
        g8 = _to_fp8(grad, g_scale, E5M2, E5M2_MAX)
        # _scaled_mm's mat2 must be column-major: W (N, K) laid out as its transpose. A kept
        # transposed copy (keep_transposed_weights) saves transposing W on every backward.
        w_col = w8_t.t() if w8_t is not None else w8.t().contiguous().t()
        dx = torch._scaled_mm(g8, w_col, scale_a=g_scale, scale_b=w_scale, out_dtype=ctx.x_dtype)
        return dx, None, None, None, None


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
        # (in, out) contiguous copy of the fp8 weight for the fp8 backward product, or None
        self.register_buffer("weight_t", None, persistent=False)

    def _dtype(self, x: torch.Tensor) -> torch.dtype:
        if torch.is_autocast_enabled(x.device.type):
            return torch.get_autocast_dtype(x.device.type)
        return self.compute_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype(x)
        if self.fp8_compute and x.shape[-1] % 16 == 0 and self.out_features % 16 == 0:
            flat = x.reshape(-1, x.shape[-1])
            if flat.shape[0] % 16 == 0:
                y = _Fp8MatmulFn.apply(flat, self.weight, self.weight_t, self.weight_scale, dtype)
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


def keep_transposed_weights(model: nn.Module) -> int:
    """Give every fp8-compute Fp8Linear a transposed fp8 copy for its backward product.

    Costs one more byte per block-linear weight (13 GB for a 14B expert); returns the bytes.
    """
    added = 0
    for module in model.modules():
        if isinstance(module, Fp8Linear) and module.fp8_compute and module.weight_t is None:
            module.weight_t = module.weight.detach().t().contiguous()
            added += module.weight_t.numel()
    return added


def _is_fp8_exact(weight: torch.Tensor) -> bool:
    """True when every value survives a round trip through float8_e4m3fn."""
    return bool(torch.equal(weight.to(E4M3).to(weight.dtype), weight))


# --- the plan ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DitShape:
    """What the memory model needs to know about a DiT: widths, depth, weight counts."""

    dim: int
    ffn_dim: int
    num_layers: int
    linear_weights: int  # the block linears (LoRA targets): fp8 or 16-bit storage
    other16_weights: int  # everything else held in the compute dtype
    float32_weights: int  # the time path (kept in float32)

    @classmethod
    def wan(
        cls, dim: int, ffn_dim: int, num_layers: int, text_dim: int = 4096, freq_dim: int = 256
    ):
        """Exact counts for diffusers' WanTransformer3DModel (T2V, patch 1x2x2, 16 channels)."""
        linear = num_layers * (8 * dim * dim + 2 * dim * ffn_dim)
        time32 = freq_dim * dim + dim + dim * dim + dim + 6 * dim * dim + 6 * dim
        other = 65 * dim + text_dim * dim + dim + dim * dim + dim + 64 * dim + 64 + 2 * dim
        other += num_layers * (21 * dim + ffn_dim)
        return cls(dim, ffn_dim, num_layers, linear, other, time32)

    @classmethod
    def from_header(cls, path: str | Path) -> DitShape:
        """From a DiT file's safetensors header (no weights read)."""
        from ..models.dit import FLOAT32_TENSOR_PREFIXES, infer_dit_info
        from ..models.files import read_safetensors_header, strip_comfy_prefix

        info = infer_dit_info(path)
        linear = other = time32 = 0
        for name, (_dtype, shape) in read_safetensors_header(path).items():
            name = strip_comfy_prefix(name)
            count = math.prod(shape)
            if _BLOCK_LINEAR_KEY.fullmatch(name):
                linear += count
            elif name.startswith(FLOAT32_TENSOR_PREFIXES):
                time32 += count
            else:
                other += count
        return cls(info.dim, info.ffn_dim, info.num_layers, linear, other, time32)

    @property
    def weight_count(self) -> int:
        return self.linear_weights + self.other16_weights + self.float32_weights

    def lora_params(self, rank: int) -> int:
        d, f = self.dim, self.ffn_dim
        return self.num_layers * rank * (8 * 2 * d + 2 * (d + f))


_BLOCK_LINEAR_KEY = re.compile(
    r"blocks\.\d+\.(?:(?:self_attn|cross_attn)\.[qkvo]|ffn\.[02])\.weight"
)
# one Wan 2.2 T2V A14B expert (and Wan 2.1 T2V 14B)
WAN_14B = DitShape.wan(5120, 13824, 40)


def kept_block_bytes(shape: DitShape, tokens: int, compiled: bool) -> int:
    """Activation memory one block keeps for backward when it is not recomputed."""
    per_token = ACT_BYTES_PER_TOKEN_DIM * shape.dim + ACT_BYTES_PER_TOKEN_FFN * shape.ffn_dim
    return int(tokens * per_token * (COMPILED_ACT_FACTOR if compiled else 1.0))


def predict_peak_bytes(
    shape: DitShape,
    tokens: int,
    *,
    fp8_storage: bool,
    recompute: int,
    compiled: bool,
    rank: int = 16,
    weight_bytes: int = 2,
    transposed: bool = False,
) -> int:
    """Predicted peak of torch.cuda.max_memory_allocated for a training step (bytes).

    weights (block linears 1 byte with fp8 storage, else `weight_bytes`, plus 1 byte for a
    kept transposed fp8 copy; the time path float32) + LoRA training state + kept blocks'
    activations + recomputed blocks' inputs +
    (one block rebuilt in backward, if any is recomputed) + transients. Calibrated on the H100
    (benchmarks/RESULTS.md): exact-lowmem 17.7 GiB measured (17.6 predicted), exact 57.0
    measured (58.0 predicted), 36/40 recomputed with fp8 storage 21.4 measured (21.5), fast
    44.1 (44.9), fast with transposed copies 57.2 (58.0).
    """
    recompute = min(max(recompute, 0), shape.num_layers)
    kept = shape.num_layers - recompute
    weights = shape.linear_weights * ((1 if fp8_storage else weight_bytes) + int(transposed))
    weights += shape.other16_weights * weight_bytes + shape.float32_weights * 4
    block = kept_block_bytes(shape, tokens, compiled)
    activations = kept * block * (MIXED_KEPT_FACTOR if recompute else 1.0)
    activations += recompute * tokens * shape.dim * CKPT_INPUT_BYTES_PER_TOKEN_DIM
    if recompute:
        activations += block  # the block being rebuilt in backward
    lora = shape.lora_params(rank) * LORA_STATE_BYTES
    return int(weights + lora + activations + TRANSIENT_BYTES)


def usable_bytes(budget: int) -> int:
    """The part of a memory budget the predicted peak may use (the rest is the margin)."""
    return int(budget - max(MARGIN_MIN_BYTES, MARGIN_FRACTION * budget))


def min_budget_bytes(peak: int) -> int:
    """The smallest budget whose usable part holds `peak`."""
    return math.ceil(max(peak + MARGIN_MIN_BYTES, peak / (1 - MARGIN_FRACTION))) + 1


@dataclass(frozen=True)
class SpeedPlan:
    """What prepare_base / prepare_for_speed do, decided once from the settings and card."""

    compute_dtype: torch.dtype
    fp8_storage: bool  # block linears held in float8_e4m3fn
    fp8_compute: bool  # block linears multiply in fp8 (speed = "fast")
    compile: bool
    checkpointing: str  # "full" | "none" | "auto"
    tokens: int | None = None  # tokens per micro-batch, for "auto" checkpointing
    # from the memory model (None: not planned, e.g. on the CPU or with no model shape)
    recompute: int | None = None  # how many blocks recompute in backward
    num_blocks: int | None = None
    predicted_peak: int | None = None  # bytes
    budget: int | None = None  # bytes: training.max_vram_gb, else the card's free memory
    fits: bool = True  # predicted peak within the budget's usable part
    # fast mode: keep a transposed fp8 copy of each block linear for the backward product
    fp8_transposed: bool = False

    @property
    def load_dtype(self) -> torch.dtype:
        """The dtype to load the DiT in: fp8 when the block linears will be fp8 anyway."""
        return E4M3 if self.fp8_storage else self.compute_dtype

    def describe(self) -> str:
        """One line: storage, recompute, compile (and the prediction), for logs and doctor."""
        storage = "fp8 storage" if self.fp8_storage else "16-bit storage"
        if self.fp8_compute:
            storage += " + FAST fp8 matmuls"
        if self.fp8_transposed:
            storage += " (+ transposed copies)"
        if self.recompute is not None:
            recompute = f"{self.recompute}/{self.num_blocks} blocks recomputed"
        else:
            recompute = {"full": "all blocks recomputed", "none": "no recompute"}.get(
                self.checkpointing, "recompute decided at load"
            )
        text = f"{storage}, {recompute}, {'compiled' if self.compile else 'eager'}"
        if self.predicted_peak is not None and self.budget is not None:
            text += f"; predicted peak {self.predicted_peak / GiB:.1f} GiB of {self.budget / GiB:.1f} GiB"
        return text


def plan_speed(
    training,
    device: torch.device,
    compute_dtype: torch.dtype,
    *,
    weight_count: int | None = None,
    tokens: int | None = None,
    shape: DitShape | None = None,
    free_bytes: int | None = None,
    rank: int = 16,
) -> SpeedPlan:
    """Resolve the "auto" settings of `training` (a TrainingSettings) for this device.

    With the DiT's `shape` and `tokens` (per micro-batch) the storage and the number of
    recomputed blocks come from `predict_peak_bytes` (LoRA `rank`) against the budget:
    `training.max_vram_gb`, else `free_bytes`, else the card's free memory now. Among the
    allowed (storage, recompute) pairs that fit the budget's usable part, the fewest
    recomputed blocks wins, then 16-bit storage (no per-use upcast). If none fits, the
    smallest (fp8 storage if allowed, all blocks recomputed) with fits=False.
    Without a shape (old callers): the previous free-memory rule for fp8 storage and a
    runtime "auto" recompute count (blocks_to_checkpoint).
    """
    cuda = device.type == "cuda"
    fast = training.speed == "fast"
    fp8_base = training.fp8_base
    compile_ = {"on": True, "off": False, "auto": cuda}[training.compile]
    max_vram = getattr(training, "max_vram_gb", None)

    if not training.gradient_checkpointing:
        checkpointing = "none"
    elif training.checkpointing == "auto" and not cuda:
        checkpointing = "full"
    else:
        checkpointing = training.checkpointing

    if training.fp8_storage == "on" or fast:  # fast: the fp8 product needs fp8 weights
        storages = [True]
    elif training.fp8_storage == "off" or not fp8_base or not cuda:
        storages = [False]
    else:
        storages = [False, True]

    if not cuda:
        return SpeedPlan(compute_dtype, storages[-1], fast, compile_, checkpointing, tokens)

    if max_vram is not None:
        budget = int(max_vram * GiB)
    elif free_bytes is not None:
        budget = int(free_bytes)
    else:
        budget = available_bytes(device)

    if shape is None or tokens is None:  # no model shape: the previous rule
        if len(storages) == 2:
            need16 = 2 * (weight_count or 0) + AUTO_RESERVE_BYTES + 8 * GiB
            storages = [need16 > budget]
        return SpeedPlan(compute_dtype, storages[0], fast, compile_, checkpointing, tokens)

    n = shape.num_layers
    levels = {"none": [0], "full": [n]}.get(checkpointing, list(range(n + 1)))
    usable = usable_bytes(budget)
    weight_bytes = 4 if compute_dtype == torch.float32 else 2

    def peak(fp8: bool, r: int, transposed: bool = False) -> int:
        return predict_peak_bytes(
            shape,
            tokens,
            fp8_storage=fp8,
            recompute=r,
            compiled=compile_,
            rank=rank,
            weight_bytes=weight_bytes,
            transposed=transposed,
        )

    choice = None
    for r in levels:  # fewest recomputed blocks first, then 16-bit before fp8
        fitting = [fp8 for fp8 in storages if peak(fp8, r) <= usable]
        if fitting:
            choice = (fitting[0], r)
            break
    fits = choice is not None
    if choice is None:
        choice = (storages[-1], levels[-1])
    fp8, r = choice
    # fast mode: transposed fp8 copies save transposing every weight in backward (measured
    # 0.424 -> 0.399 s/step, benchmarks/RESULTS.md) when they fit beside the same plan
    transposed = fast and fits and peak(fp8, r, transposed=True) <= usable
    return SpeedPlan(
        compute_dtype,
        fp8,
        fast,
        compile_,
        checkpointing,
        tokens,
        recompute=r,
        num_blocks=n,
        predicted_peak=peak(fp8, r, transposed),
        budget=budget,
        fits=fits,
        fp8_transposed=transposed,
    )


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
    if plan.fp8_transposed:
        keep_transposed_weights(model)
    for module in model.modules():
        if isinstance(module, Fp8Linear):
            continue
        for leaf, param in list(module._parameters.items()):
            if param is not None and param.dtype in (E4M3, E5M2):
                module._parameters[leaf] = nn.Parameter(
                    param.data.to(plan.compute_dtype), requires_grad=False
                )
    return model


def activation_bytes_per_block(model: nn.Module, tokens: int, compiled: bool = False) -> int:
    """Estimated activation memory one un-checkpointed block keeps for backward."""
    block = model.blocks[0]
    dim = getattr(block.attn1.to_q, "in_features", 0)
    ffn = getattr(block.ffn.net[2], "in_features", 0)
    shape = DitShape(dim, ffn, len(model.blocks), 0, 0, 0)
    return kept_block_bytes(shape, tokens, compiled)


def spread(n_ckpt: int, n: int) -> list[int]:
    """n_ckpt block indices out of n, spread evenly over the depth."""
    if n_ckpt <= 0:
        return []
    if n_ckpt >= n:
        return list(range(n))
    return sorted({math.floor(i * n / n_ckpt) for i in range(n_ckpt)})


def blocks_to_checkpoint(model: nn.Module, plan: SpeedPlan, device: torch.device) -> list[int]:
    """Indices of the blocks to recompute in backward, by plan.checkpointing."""
    n = len(model.blocks)
    if plan.checkpointing == "none":
        return []
    if plan.checkpointing == "full":
        return list(range(n))
    if plan.recompute is not None:  # planned from the memory budget (plan_speed)
        return spread(plan.recompute, n)
    if plan.tokens is None or device.type != "cuda":
        return list(range(n))
    free = available_bytes(device)
    per_block = max(activation_bytes_per_block(model, plan.tokens, plan.compile), 1)
    keep = int(max(0, free - AUTO_RESERVE_BYTES) // per_block)  # blocks that need no recompute
    return spread(max(0, n - keep), n)


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


def skip_lora_input_cast(model: nn.Module) -> None:
    """Stop peft casting each LoRA input to float32 (the LoRA weights' dtype).

    Under autocast the LoRA matmuls run in the compute dtype anyway, so peft's cast only adds
    a float32 copy of every block activation (and its gradient) per LoRA: the values are
    bit-identical without it. Training always runs under autocast or wholly in float32.
    """
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = False


def prepare_for_speed(model: nn.Module, plan: SpeedPlan, device: torch.device) -> nn.Module:
    """After add_lora: LoRA inputs, the recompute policy, compiled blocks. Returns the model."""
    skip_lora_input_cast(model)
    indices = blocks_to_checkpoint(model, plan, device)
    set_checkpointing(model, indices)
    model.wanlora_checkpointed = indices  # for logs and benchmarks
    if plan.compile:
        compile_blocks(model)
    log.info(
        "speed: fp8 storage %s, fp8 compute %s, compiled %s, %d/%d blocks recomputed%s",
        plan.fp8_storage,
        plan.fp8_compute,
        plan.compile,
        len(indices),
        len(model.blocks),
        ""
        if plan.predicted_peak is None
        else f" (predicted peak {plan.predicted_peak / GiB:.1f} GiB, budget {plan.budget / GiB:.1f} GiB)",
    )
    return model


def tokens_for_resolution(resolution: tuple[int, int], frames: int = 1) -> int:
    """Tokens per sample: VAE stride 8 x patch 2 = 16 pixels a token side, per latent frame."""
    width, height = resolution
    return (width // 16) * (height // 16) * frames
