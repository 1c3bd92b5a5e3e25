"""The caption's zero-padding rows folded into a few keys of cross-attention (exact maths).

The recipe zero-pads every caption embedding to 512 rows and the DiT attends to all of them.
The padding rows are identical, so after the text projection, to_k/norm_k and to_v they are
identical keys and values: a query's softmax over n copies of one key equals one copy whose
score carries + log(n). Folding them leaves the maths unchanged and shrinks the text side of
every block's cross-attention from 512 rows to the caption's length (rounded up), so the
padding's K/V projections and its share of the attention are computed once instead of ~390
times. Gradients agree too: the LoRA on to_k/to_v gets the sum of the copies' gradients.

    rows = folded_rows(longest caption in the micro-batch)   a multiple of FOLD_MULTIPLE
    context = pad_context(c, rows)                           the step's (B, rows, D) text
    FoldedTextAttnProcessor on every block's attn2           adds the count bias (below)

A context of rows < 512 stands for 512: its rows past the captions are zero (padding), the
last BIAS_KEYS of them carry log-weights whose exponentials sum to the padding rows left out
plus themselves. One log(n) rounded to fp16 would be off by up to 0.2% of n (bf16: 1.5%), so
the weight is split over BIAS_KEYS keys, each a representable bias chosen greedily: the sum
is then right to float32 rounding. A context of 512 rows (sampling, a model without the fold)
goes through the plain attention, bit for bit as before.

The rows are fixed per micro-batch by the host (the cached captions' lengths), so a compiled
block sees a few shapes only and a CUDA graph is captured per shape, as for image buckets.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor
from torch import nn

from ...models.text_encoder import TEXT_LEN

FOLD_MULTIPLE = 64  # rows are rounded up to this: few shapes to compile and graph
BIAS_KEYS = 3  # padding keys that carry the count (three terms: float32-exact in bf16 too)


def folded_rows(longest: int, full: int = TEXT_LEN) -> int:
    """Rows of text for a micro-batch whose longest caption has `longest` tokens: the
    caption, at least BIAS_KEYS padding rows, rounded up to FOLD_MULTIPLE; `full` (no fold)
    when that is not shorter."""
    rows = -(-(longest + BIAS_KEYS) // FOLD_MULTIPLE) * FOLD_MULTIPLE
    return rows if rows < full else full


SIGNIFICANT_BITS = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24}


def round_down(x: float, dtype: torch.dtype) -> float:
    """The largest value representable in `dtype` that is <= x (normal range; pure Python,
    so nothing here runs on a tensor or breaks a compiled graph)."""
    if x == 0.0:
        return 0.0
    _, exponent = math.frexp(abs(x))
    scale = 2.0 ** (SIGNIFICANT_BITS[dtype] - exponent)
    return math.floor(x * scale) / scale


def count_biases(count: int, dtype: torch.dtype, keys: int = BIAS_KEYS) -> tuple[float, ...]:
    """`keys` log-weights representable in `dtype` whose exponentials sum to `count` (greedy:
    each the largest representable value whose exponential fits what is left)."""
    left, out = float(count), []
    for _ in range(keys):
        if left <= 1e-30:  # nothing left: this key weighs exp(min) == 0 in float32
            out.append(torch.finfo(dtype).min)
            continue
        b = round_down(math.log(left), dtype)
        out.append(b)
        left -= math.exp(b)
    return tuple(out)


def fold_bias(rows, dtype: torch.dtype, device, full: int = TEXT_LEN) -> torch.Tensor:
    """The (1, 1, 1, rows) additive score bias of a folded context of `rows` rows.

    Tensor ops only, the same greedy as `count_biases`: inside a compiled block `rows` may be
    a symbolic size (dynamo makes the text length dynamic once it has seen two), and Python
    arithmetic on it would put float guards on the graph."""
    f64 = dict(dtype=torch.float64, device=device)
    left = torch.full((), full + BIAS_KEYS, **f64) - rows  # padding left out + the bias keys
    terms = []
    for _ in range(BIAS_KEYS):
        terms.append(round_down_tensor(left, dtype))
        left = left - terms[-1].exp()
    bias = torch.zeros(rows, **f64)
    bias[rows - BIAS_KEYS :] = torch.stack(terms)
    return bias.to(dtype).view(1, 1, 1, rows)


def round_down_tensor(left: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64: the largest value of `dtype` <= log(left) (`round_down` in tensor ops);
    nothing left (<= 1e-30): the dtype's minimum, a key of weight exp(min) == 0."""
    x = left.clamp(min=1e-30).log()
    exponent = torch.floor(torch.log2(x.abs().clamp(min=1e-30))) + 1
    scale = torch.exp2(SIGNIFICANT_BITS[dtype] - exponent)
    down = torch.where(x == 0, x, torch.floor(x * scale) / scale)
    return torch.where(left <= 1e-30, torch.finfo(dtype).min, down)


class FoldedTextAttnProcessor(WanAttnProcessor):
    """diffusers' Wan attention, plus the count bias when the text context is folded."""

    def __init__(self, full: int = TEXT_LEN):
        super().__init__()
        self.full = full

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 rotary_emb=None):  # fmt: skip
        rows = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else None
        if rows is not None and rows < self.full and attention_mask is None:
            # the products' dtype: the autocast dtype, else the activations'
            dtype = (
                torch.get_autocast_dtype(hidden_states.device.type)
                if torch.is_autocast_enabled(hidden_states.device.type)
                else hidden_states.dtype
            )
            attention_mask = fold_bias(rows, dtype, hidden_states.device, self.full)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask,
                                rotary_emb)  # fmt: skip


def install_text_fold(model: nn.Module) -> None:
    """Every block's cross-attention takes folded contexts (text-to-video DiTs: an image
    conditioned one splits its context at row 512, so it keeps the plain processor)."""
    for block in model.blocks:
        if block.attn2.add_k_proj is None:
            block.attn2.set_processor(FoldedTextAttnProcessor())


def folds_text(model: nn.Module) -> bool:
    """Whether `model` takes folded contexts (install_text_fold ran on it)."""
    blocks = getattr(model, "blocks", None)
    return bool(blocks) and isinstance(blocks[0].attn2.processor, FoldedTextAttnProcessor)


def text_rows(model: nn.Module, lengths: list[int]) -> int:
    """Rows of text the step gives `model` for captions of these token counts."""
    return folded_rows(max(lengths)) if folds_text(model) else TEXT_LEN
