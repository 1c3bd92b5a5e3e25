"""The block-swap benchmarks at tiny dims on the CPU: the swap variants of bench_step give the
same losses as their resident twins, and gpu_swap_smoke's CPU path finds swapped training
steps bit-identical (half, all, and the 16 / 12 / 8 GiB modes' share of the blocks), also
when gpu_train_smoke runs it after its demo training."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks_module import load_benchmark

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_step.py")


def test_swap_variants_match_their_resident_twins(bench):
    cfg = dict(bench.TINY, num_layers=4)  # more blocks than the ring's two
    run = {
        n: bench.run_variant(n, cfg, CPU, warmup=1, steps=1)
        for n in ("exact-eager", "exact-swap-eager", "reference-swap16")
    }
    swapped = run["exact-swap-eager"]
    assert swapped["losses"] == run["exact-eager"]["losses"]  # streamed weights: same values
    assert swapped["blocks_swapped"] == 4 and "4 blocks streamed" in swapped["plan_text"]
    block = 8 * 256 * 256 + 2 * 256 * 512  # one tiny block's linears, fp8
    assert swapped["h2d_gb_per_step"] == pytest.approx(2 * (4 - 2) * block / 1e9)
    reference = run["reference-swap16"]  # the last 16 blocks: all 4 here, synchronous
    assert reference["blocks_swapped"] == 4 and reference["moved_gb_per_step"] > 0
    assert reference["losses"][0] == pytest.approx(swapped["losses"][0], rel=1e-3)
    assert {"exact-swap16", "exact-swap12", "exact-swap8", "reference-swap27"} <= set(
        bench.VARIANTS
    )


def test_gpu_swap_smoke_runs_on_the_cpu(tmp_path, capsys):
    smoke = load_benchmark("gpu_swap_smoke.py")
    rc = smoke.main(["--dir", str(tmp_path), "--device", "cpu", "--layers", "4", "--steps", "2"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    (run,) = report["runs"]
    assert run["repeat_bit_identical"]
    assert run["half"]["blocks"] == [0, 2] and run["all"]["blocks"] == [0, 1, 2, 3]
    assert run["half"]["bit_identical"] and run["all"]["bit_identical"]
    assert run["all"]["loads"] == 4 + 2 + 2 * 2  # first step fills the ring, then 2 (k - 2)
    # the 14B plan streams 12, 24 and 37 of 40 blocks at 16 / 12 / 8 GiB: 1, 2, 4 of 4 here
    modes = {label: run[label]["blocks"] for label in ("16gib", "12gib", "8gib")}
    assert modes == {"16gib": [0], "12gib": [0, 2], "8gib": [0, 1, 2, 3]}
    assert all(run[label]["bit_identical"] for label in modes)


def test_gpu_train_smoke_runs_tiny_on_the_cpu_with_the_swap_check(tmp_path, capsys):
    smoke = load_benchmark("gpu_train_smoke.py")
    args = ["--dir", str(tmp_path), "--device", "cpu", "--tiny", "--modes", "off,off"]
    assert smoke.main(args) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{\n") :])
    for expert in ("high", "low"):
        assert report[expert]["bit_identical"]  # eager on the CPU: run to run the same
        assert len(report[expert]["last_losses"][0]) == 2  # 1 epoch of 2 images
    (run,) = report["swap"]["runs"]
    assert report["swap"]["layers"] == 4
    assert all(run[k]["bit_identical"] for k in ("half", "all", "16gib", "12gib", "8gib"))
