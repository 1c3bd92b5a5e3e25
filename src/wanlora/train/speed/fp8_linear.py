"""fp8 weight storage for the block linears, and the opt-in fp8 matrix products.

- storage (`Fp8Linear`, the default wherever the memory plan wants it): the big block
  linears keep their fp8-rounded weights in float8_e4m3fn and upcast them to the compute
  dtype inside `forward`. fp8 values are exact in fp16/bf16, so this is bit-identical to
  holding them in 16 bits, at half the memory. Unlike diffusers' layerwise-casting hooks it
  is a plain module, so `torch.compile` takes it.
- `speed = "fast"` (opt-in, changes numerics): the block linears' matrix products run in fp8
  on the tensor cores (`torch._scaled_mm`): activations and output gradients are quantised
  per tensor to e4m3 / e5m2 with an amax scale; weights are the fp8-rounded values themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
E4M3_MAX = torch.finfo(E4M3).max  # 448
E5M2_MAX = torch.finfo(E5M2).max  # 57344


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
