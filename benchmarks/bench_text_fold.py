"""The text fold (train/speed/text_fold.py) measured alone: numerics and attention time.

numerics: a random-weight DiT of the real layout (non-zero biases, so the padding rows'
keys and values are not zero), LoRA with non-zero weights; one forward + backward through
the library's own step functions (model_inputs, prediction_loss) with the fold and without
(all 512 rows), per precision; max abs / rel difference of the loss and the LoRA gradients,
beside the same unfolded step run twice (the kernels' own run-to-run spread).
attention: cross-attention alone at the expert's shapes (3600 queries, 40 heads of 128):
512 keys unmasked (today) vs the folded rows with the count bias, per SDPA backend, fwd+bwd.

    python benchmarks/bench_text_fold.py --device cuda --out OUT
    python benchmarks/bench_text_fold.py --device cpu --tiny       # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_step  # noqa: E402  (the random DiT builder, beside this script)

MID = dict(dim=1024, ffn_dim=2816, num_layers=4, text_dim=4096, freq_dim=256, latent=60)


def build(cfg, device, dtype, fold: bool):
    from wanlora.lora.inject import add_lora, lora_parameters
    from wanlora.recipes import load_recipe
    from wanlora.train.speed.text_fold import install_text_fold

    model = bench_step.build_random_dit(cfg, device, dtype)
    gen = torch.Generator("cpu").manual_seed(7)
    with torch.no_grad():  # the real files' biases are not zero: padding keys are not zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen).to(p) * 0.05)
    torch.manual_seed(0)
    add_lora(model, load_recipe("wan22-t2v").lora)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(0, 0.02, generator=None)
    if fold:
        install_text_fold(model)
    return model.train()


def step(model, samples, device, dtype):
    from wanlora.lora.inject import lora_parameters
    from wanlora.recipes import load_recipe
    from wanlora.train.speed.text_fold import text_rows
    from wanlora.train.step import model_inputs, prediction_loss

    recipe = load_recipe("wan22-t2v")
    batch = [0]
    rows = text_rows(model, [samples[i][1].shape[0] for i in batch])
    gen = torch.Generator("cpu").manual_seed(11)
    inputs = model_inputs(samples, batch, recipe, recipe.experts["low"], gen, device, rows)
    for p in lora_parameters(model):
        p.grad = None
    loss = prediction_loss(model, *inputs, dtype)
    loss.backward()
    return loss.item(), [p.grad.float().clone() for p in lora_parameters(model)], rows


def compare(a, b) -> dict:
    (la, ga, _), (lb, gb, _) = a, b
    num = max((x - y).abs().max().item() for x, y in zip(ga, gb, strict=True))
    big = max(x.abs().max().item() for x in ga)
    norm = (
        sum(((x - y) ** 2).sum().item() for x, y in zip(ga, gb, strict=True))
        / sum((x**2).sum().item() for x in ga)
    ) ** 0.5
    return {
        "loss_abs": abs(la - lb),
        "loss_rel": abs(la - lb) / abs(la),
        "grad_max_abs": num,
        "grad_max_abs_over_max": num / big,
        "grad_rel_norm": norm,
    }


def numerics(cfg, device, precisions) -> list[dict]:
    """Per precision: folded vs plain, plain twice, and each against the float32 plain step
    (the same weights): a fold as faithful as the plain step is as far from float32."""
    torch.manual_seed(1)
    samples = bench_step.make_samples(cfg, n=1)
    truth = step(build(cfg, device, torch.float32, fold=False), samples, device, torch.float32)
    out = []
    for dtype in precisions:
        plain = build(cfg, device, dtype, fold=False)
        folded = build(cfg, device, dtype, fold=True)
        a, a2 = step(plain, samples, device, dtype), step(plain, samples, device, dtype)
        b = step(folded, samples, device, dtype)
        out.append(
            {
                "dtype": str(dtype),
                "rows": b[2],
                "loss_plain": a[0],
                "loss_folded": b[0],
                "fold_vs_plain": compare(a, b),
                "plain_vs_plain": compare(a, a2),
                "plain_vs_float32": compare(truth, a),
                "fold_vs_float32": compare(truth, b),
            }
        )
        del plain, folded
    return out


def attention_times(device, rows_folded=128, heads=40, q_len=3600, reps=20) -> list[dict]:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wanlora.train.speed.text_fold import fold_bias

    dtype = torch.float16
    q = torch.randn(1, heads, q_len, 128, device=device, dtype=dtype, requires_grad=True)
    results = []
    cases = [("512 rows, no mask", 512, None), (f"{rows_folded} rows + bias", rows_folded, 1)]
    backends = {
        "default": None,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    for label, rows, masked in cases:
        k = torch.randn(1, heads, rows, 128, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn(1, heads, rows, 128, device=device, dtype=dtype, requires_grad=True)
        mask = fold_bias(rows, dtype, device) if masked else None
        grad = torch.randn(1, heads, q_len, 128, device=device, dtype=dtype)
        for name, backend in backends.items():

            def run(backend=backend, k=k, v=v, mask=mask, grad=grad):
                # a fresh context each call: sdpa_kernel's context manager is single-use
                with sdpa_kernel([backend]) if backend is not None else _null():
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                out.backward(grad)

            try:
                for _ in range(3):
                    run()
                times = []
                for _ in range(reps):
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    run()
                    e.record()
                    torch.cuda.synchronize()
                    times.append(s.elapsed_time(e))
                ms = statistics.median(times)
                results.append({"case": label, "backend": name, "fwd_bwd_ms": ms,
                                "ms_per_step_40_blocks": 40 * ms})  # fmt: skip
            except Exception as exc:  # a backend that refuses the case
                results.append({"case": label, "backend": name, "error": str(exc)[:120]})
    return results


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cfg = bench_step.TINY if args.tiny else MID
    cuda = device.type == "cuda"
    precisions = [torch.float16, torch.float32] if cuda else [torch.float32, torch.bfloat16]
    # CPU: bfloat16 (CPU autocast); the recipe's fp16 runs on the GPU
    report = {"device": torch.cuda.get_device_name(device) if cuda else "cpu",
              "torch": torch.__version__, "cfg": cfg, "numerics": numerics(cfg, device, precisions)}  # fmt: skip
    if cuda:
        report["attention"] = attention_times(device)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "text_fold.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
