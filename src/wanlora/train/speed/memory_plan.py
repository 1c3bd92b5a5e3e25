"""The memory model and the speed plan: what fits the card, decided once before loading.

The memory budget (`training.max_vram_gb`, `wanlora train --max-vram`; default: the card's
free memory): `plan_speed` picks the storage (16-bit or fp8 copies of the fp8 values,
fp8_linear.py) and the number of recomputed blocks (checkpointing.py) from ONE memory model
(`predict_peak_bytes`, calibrated on the H100 measurements in benchmarks/RESULTS.md) so the
predicted peak stays under the budget minus a margin. `wanlora doctor` reports the same plan.
Per-token timesteps (TI2V-5B image-to-video batches) and latent channels other than T2V's
16 / 16 add what token_memory.py counts. Below what the resident weights need, blocks stream from pinned host memory (swap_plan.py,
block_swap.py); the 14B recipe at 960x960 fits 24 GiB without it. The plan also carries the compile choice (compile.py); the
defaults keep the recipe's numerics, `training.speed = "fast"` does not.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ...device_memory import available_bytes
from ...models.dit import FLOAT32_TENSOR_PREFIXES, infer_dit_info
from ...models.files import DIT_TASKS, read_safetensors_header, strip_comfy_prefix
from .fp8_linear import E4M3
from .token_memory import latent_channel_bytes, per_token_modulation_bytes

GiB = 2**30
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


@dataclass(frozen=True)
class DitShape:
    """What the memory model needs to know about a DiT: widths, depth, weight counts."""

    dim: int
    ffn_dim: int
    num_layers: int
    linear_weights: int  # the block linears (LoRA targets): fp8 or 16-bit storage
    other16_weights: int  # everything else held in the compute dtype
    float32_weights: int  # the time path (kept in float32)
    in_channels: int = 16  # latent channels in: 16 T2V, 36 I2V-A14B, 48 TI2V-5B
    out_channels: int = 16  # and out: 16, 16, 48

    @classmethod
    def wan(
        cls,
        dim: int,
        ffn_dim: int,
        num_layers: int,
        text_dim: int = 4096,
        freq_dim: int = 256,
        in_channels: int = 16,
        out_channels: int = 16,
    ):
        """Exact counts for diffusers' WanTransformer3DModel (patch 1x2x2)."""
        linear = num_layers * (8 * dim * dim + 2 * dim * ffn_dim)
        time32 = freq_dim * dim + dim + dim * dim + dim + 6 * dim * dim + 6 * dim
        patch = 4 * in_channels * dim + dim  # the patch embedding (a 1x2x2 convolution)
        head = 4 * out_channels * dim + 4 * out_channels
        other = patch + text_dim * dim + dim + dim * dim + dim + head + 2 * dim
        other += num_layers * (21 * dim + ffn_dim)
        return cls(dim, ffn_dim, num_layers, linear, other, time32, in_channels, out_channels)

    @property
    def task(self) -> str | None:
        """The DiT task its channels say ("t2v", "i2v", "ti2v"), None if none."""
        return DIT_TASKS.get((self.in_channels, self.out_channels))

    @classmethod
    def from_header(cls, path: str | Path) -> DitShape:
        """From a DiT file's safetensors header (no weights read)."""
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
        return cls(
            info.dim,
            info.ffn_dim,
            info.num_layers,
            linear,
            other,
            time32,
            info.in_channels,
            info.out_channels,
        )

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
    per_token: bool = False,
) -> int:
    """Predicted peak of torch.cuda.max_memory_allocated for a training step (bytes).

    weights (block linears 1 byte with fp8 storage, else `weight_bytes`, plus 1 byte for a
    kept transposed fp8 copy; the time path float32) + LoRA training state + kept blocks'
    activations + recomputed blocks' inputs +
    (one block rebuilt in backward, if any is recomputed) + transients. Calibrated on the H100
    (benchmarks/RESULTS.md): exact-lowmem 17.7 GiB measured (17.6 predicted), exact 57.0
    measured (58.0 predicted), 36/40 recomputed with fp8 storage 21.4 measured (21.5), fast
    44.1 (44.9), fast with transposed copies 57.2 (58.0).
    `per_token`: the step passes per-token timesteps (TI2V-5B with an image-to-video item),
    whose modulations the kept and rebuilt blocks hold (token_memory.py); latent channels
    other than 16 / 16 (the shape's) add their inputs and targets.
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
    if per_token:
        activations += per_token_modulation_bytes(
            shape.dim, tokens, kept=kept, rebuilt=recompute > 0, compiled=compiled
        )
    activations += latent_channel_bytes(shape.in_channels, shape.out_channels, tokens)
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
    # a plan that does not fit and could not stream blocks to get there says why (swap_plan)
    why_not: str | None = None
    # cross-attention takes the caption's padding rows folded into a few keys (text_fold.py)
    text_fold: bool = False

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

    def problem(self) -> tuple[str, str] | None:
        """(what, fix) for a WanloraError when the plan does not fit its budget, else None."""
        if self.fits or self.predicted_peak is None or self.budget is None:
            return None
        need = min_budget_bytes(self.predicted_peak) / GiB
        what = (
            f"the smallest memory plan ({self.describe()}) does not fit the "
            f"{self.budget / GiB:.1f} GiB budget; it needs about {need:.1f} GiB"
        )
        fix = "raise --max-vram / training.max_vram_gb, or lower dataset.resolution or batch_size"
        if self.why_not:
            what += f" ({self.why_not})"
            fix = (
                'set training.checkpointing = "auto" or "full" so blocks can stream, or '
                + fix[0].lower()
                + fix[1:]
            )
        return what, fix


def plan_speed(training, device: torch.device, compute_dtype: torch.dtype, **shape_args) -> SpeedPlan:
    """`plan_storage_and_recompute` (below, which takes the same arguments) plus the text
    fold (`training.text_fold`, auto: on for CUDA; objects without the field keep the plain
    attention)."""
    plan = plan_storage_and_recompute(training, device, compute_dtype, **shape_args)
    setting = getattr(training, "text_fold", "off")
    fold = setting == "on" or (setting == "auto" and device.type == "cuda")
    return dataclasses.replace(plan, text_fold=fold)


def plan_storage_and_recompute(
    training,
    device: torch.device,
    compute_dtype: torch.dtype,
    *,
    weight_count: int | None = None,
    tokens: int | None = None,
    shape: DitShape | None = None,
    free_bytes: int | None = None,
    rank: int = 16,
    per_token: bool = False,
) -> SpeedPlan:
    """Resolve the "auto" settings of `training` (a TrainingSettings) for this device.

    With the DiT's `shape` and `tokens` (per micro-batch) the storage and the number of
    recomputed blocks come from `predict_peak_bytes` (LoRA `rank`, `per_token` timesteps)
    against the budget:
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
            per_token=per_token,
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


def tokens_for_resolution(resolution: tuple[int, int], frames: int = 1, step: int = 16) -> int:
    """Tokens per sample: VAE stride 8 x patch 2 = 16 pixels a token side (`step`; 32 for
    TI2V-5B's Wan 2.2 VAE), per latent frame."""
    width, height = resolution
    return (width // step) * (height // step) * frames
