"""The step benchmark at tiny dims on the CPU: every eager variant runs and agrees."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks_module import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_step.py")


CPU = torch.device("cpu")


def test_tiny_variants_run_and_give_close_losses(bench):
    device = CPU
    results = {
        name: bench.run_variant(name, bench.TINY, device, warmup=1, steps=1)
        for name in ("reference", "exact-eager", "fast-eager")
    }
    for r in results.values():
        assert len(r["losses"]) == 2 and all(math.isfinite(x) for x in r["losses"])
        assert r["s_per_step"] > 0
    exact, ref, fast = (results[n]["losses"] for n in ("exact-eager", "reference", "fast-eager"))
    assert exact[0] == pytest.approx(ref[0], rel=1e-3)
    assert fast == pytest.approx(exact, rel=2e-2)  # fp8 products: close, not equal
    flops = bench.model_flops(bench.FULL, 3600)
    assert 90e12 < flops["forward"] < 110e12  # the 14B expert at 3600 tokens


def test_profile_reports_time_per_kind(bench):
    result = bench.run_variant("exact-eager", bench.TINY, CPU, warmup=1, steps=1, profile=True)
    text = result["profile"]
    assert text.startswith("CPU op time per step:")
    assert "top kernels" in text and "matmul" in text
    assert bench.kernel_kind("sm90_xmma_gemm_e4m3f16_tn") == "fp8 matmul"
    assert bench.kernel_kind("aten::_scaled_mm") == "fp8 matmul"
    assert bench.kernel_kind("flash_fwd_kernel") == "attention"
    assert bench.kernel_kind("triton_poi_fused_add_mul_0") == "compiled fused (triton)"


def test_attention_bench_runs_tiny_on_the_cpu():
    rows = load_benchmark("bench_attention.py").main(
        ["--tiny", "--device", "cpu", "--dtype", "fp32", "--warmup", "1", "--iters", "1"]
    )
    assert {r["shape"] for r in rows} == {"self", "cross"}
    for row in rows:
        assert row["backend"] == "math" and row["forward_ms"] > 0 and row["max_diff_out"] == 0


def test_validation_bench_runs_tiny_on_the_cpu():
    bench = load_benchmark("bench_validation.py")
    result = bench.run(bench.bench_step.TINY, CPU, warmup=1, steps=1, items=2)
    assert result["validation_forwards_per_point"] == 4  # 2 items, 4 timesteps
    assert result["train_s_per_step"] > 0 and result["validation_point_s"] > 0
    assert len(result["steps_after_validation_s"]) == 3 and result["recipe_overhead"] > 0


def test_ti2v_5b_variant_runs_tiny_on_images_and_clips(bench):
    """`--model ti2v-5b`: the 5B DiT (48 channels) on the TI2V step, 1 frame and a clip."""
    assert bench.token_count(bench.FULL_TI2V, 1) == 880  # 1280x704: 40 x 22 tokens
    assert bench.token_count(bench.FULL_TI2V, 121) == 31 * 880
    for frames in (1, 5):
        results = {
            name: bench.run_variant(name, bench.TINY_TI2V, CPU, warmup=1, steps=1, frames=frames)
            for name in ("reference", "exact-eager")
        }
        for r in results.values():
            assert r["model"] == "ti2v-5B" and r["frames"] == frames
            assert r["tokens"] == bench.token_count(bench.TINY_TI2V, frames)
            assert len(r["losses"]) == 2 and all(math.isfinite(x) for x in r["losses"])
        exact, ref = results["exact-eager"]["losses"], results["reference"]["losses"]
        assert exact[0] == pytest.approx(ref[0], rel=1e-3)


def test_i2v_variant_runs_tiny_on_the_cpu(bench):
    """`--model i2v-a14b`: the I2V-A14B expert (36 input channels) on clips, 832x480 at full
    size, through the wan22-i2v recipe's step (the conditioning after the noisy latent)."""
    assert bench.token_count(bench.FULL_I2V, 33) == 9 * 30 * 52
    assert bench.token_count(bench.FULL_I2V, 81) == 21 * 30 * 52
    cfg = bench.TINY_I2V
    results = {
        name: bench.run_variant(name, cfg, CPU, warmup=1, steps=1, frames=9)
        for name in ("reference", "exact-eager")
    }
    for r in results.values():
        assert r["model"] == "i2v-A14B" and r["tokens"] == bench.token_count(cfg, 9)
        assert len(r["losses"]) == 2 and all(math.isfinite(x) for x in r["losses"])
    exact, ref = (results[n]["losses"] for n in ("exact-eager", "reference"))
    assert exact[0] == pytest.approx(ref[0], rel=1e-3)
    samples = bench.make_samples(cfg, n=1, frames=9)
    (latent, _text, conditioning) = samples[0]
    assert latent.shape == (16, 3, 4, 6) and conditioning.shape == (20, 3, 4, 6)
    with pytest.raises(SystemExit):  # --frames must be 4n + 1
        bench.main(["--model", "i2v-a14b", "--frames", "32", "--tiny", "--inline"])
