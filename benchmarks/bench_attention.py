"""Attention alone at the 14B expert's shapes: PyTorch SDPA backends vs FlashAttention-4.

    python benchmarks/bench_attention.py [--dtype fp16] [--out results.json]
    python benchmarks/bench_attention.py --tiny --device cpu     # smoke run (math backend)

Attention is ~91 ms of the fast mode's ~350 ms of GPU work per step (benchmarks/profiles/);
this measures whether another kernel would buy part of that before wiring one into the
model. Shapes of one 960x960 step: self-attention 3600 x 3600 tokens and cross-attention
3600 x 512 text tokens, 40 heads of 128, batch 1, 40 blocks. Each backend: forward alone,
and forward + backward, CUDA-event timed (median of --iters after --warmup), TFLOP/s
(non-causal: forward 4*Sq*Sk*H*D, backward 2.5x that), and the largest difference of its
output and input gradients from cuDNN's (or, on the CPU, the math backend's).

FlashAttention-4 (`pip install flash-attn-4`, CuTe DSL; Hopper forward and backward) is
timed when it imports; its first call compiles its kernels (seconds), outside the timing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, HEAD_DIM, BLOCKS = 40, 128, 40
SHAPES = {"self": (3600, 3600), "cross": (3600, 512)}  # (query tokens, key tokens)
TINY = {"heads": 2, "shapes": {"self": (64, 64), "cross": (64, 16)}}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # B, S, H, D


def sdpa(backend: SDPBackend) -> Attention:
    def attend(q, k, v):
        with sdpa_kernel([backend]):  # SDPA wants B, H, S, D
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            )
        return out.transpose(1, 2)

    return attend


def flash_attention_4() -> Attention | None:
    try:
        from flash_attn.cute import flash_attn_func
    except ImportError:
        return None

    def attend(q, k, v):
        out = flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out

    return attend


def backends(device: torch.device) -> dict[str, Attention]:
    if device.type != "cuda":
        return {"math": sdpa(SDPBackend.MATH)}
    found = {
        "cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
        "flash2 (torch)": sdpa(SDPBackend.FLASH_ATTENTION),
        "efficient": sdpa(SDPBackend.EFFICIENT_ATTENTION),
    }
    fa4 = flash_attention_4()
    if fa4 is not None:
        found["flash4"] = fa4
    return found


def _timed(fn: Callable[[], None], device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of fn (CUDA events on a GPU, wall clock on the CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(
    attend: Attention,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grad: torch.Tensor,
    *,
    warmup: int,
    iters: int,
) -> dict:
    q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))

    def forward():
        with torch.no_grad():
            attend(q, k, v)

    def forward_backward():
        q.grad = k.grad = v.grad = None
        attend(q, k, v).backward(grad)

    out = attend(q, k, v)  # the first call (a JIT backend compiles here)
    out.backward(grad)
    result = {
        "out": out.detach(),
        "grads": [t.grad.detach().clone() for t in (q, k, v)],
        "forward_s": _timed(forward, q.device, warmup, iters),
        "forward_backward_s": _timed(forward_backward, q.device, warmup, iters),
    }
    return result


def run(
    device: torch.device, dtype: torch.dtype, *, tiny: bool, warmup: int, iters: int
) -> list[dict]:
    heads = TINY["heads"] if tiny else HEADS
    shapes = TINY["shapes"] if tiny else SHAPES
    found = backends(device)
    rows = []
    for shape_name, (sq, sk) in shapes.items():
        g = torch.Generator(device=device).manual_seed(0)
        q, grad = (
            torch.randn(1, sq, heads, HEAD_DIM, device=device, dtype=dtype, generator=g)
            for _ in range(2)
        )
        k, v = (
            torch.randn(1, sk, heads, HEAD_DIM, device=device, dtype=dtype, generator=g)
            for _ in range(2)
        )
        flops_forward = 4 * sq * sk * heads * HEAD_DIM
        reference = None
        for name, attend in found.items():
            try:
                r = measure(attend, q, k, v, grad, warmup=warmup, iters=iters)
            except (RuntimeError, NotImplementedError, AssertionError) as error:
                rows.append(
                    {
                        "shape": shape_name,
                        "backend": name,
                        "error": str(error).splitlines()[0][:200],
                    }
                )
                continue
            reference = reference or r
            backward_s = r["forward_backward_s"] - r["forward_s"]
            rows.append(
                {
                    "shape": shape_name,
                    "backend": name,
                    "forward_ms": round(r["forward_s"] * 1e3, 3),
                    "backward_ms": round(backward_s * 1e3, 3),
                    "forward_tflops": round(flops_forward / r["forward_s"] / 1e12, 1),
                    "backward_tflops": round(2.5 * flops_forward / max(backward_s, 1e-9) / 1e12, 1),
                    "per_step_ms": round(r["forward_backward_s"] * 1e3 * BLOCKS, 1),
                    "max_diff_out": float((r["out"] - reference["out"]).abs().max()),
                    "max_diff_grad": max(
                        float((a - b).abs().max())
                        for a, b in zip(r["grads"], reference["grads"], strict=True)
                    ),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="fp16")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = run(device, DTYPES[args.dtype], tiny=args.tiny, warmup=args.warmup, iters=args.iters)
    header = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": args.dtype,
    }
    print(json.dumps(header))
    for row in rows:
        print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps({**header, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
