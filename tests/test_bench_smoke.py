"""The step benchmark at tiny dims on the CPU: every eager variant runs and agrees."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_variants_run_and_give_close_losses(bench):
    device = torch.device("cpu")
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
