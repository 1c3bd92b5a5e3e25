"""The block-swap plan (issue 23) on the 14B shapes, pure arithmetic (no GPU): which blocks
stream at 24 / 16 / 12 / 8 GiB, the predicted peak stays under the budget, smaller budgets
stream more, host RAM and host->GPU bytes are stated, and a budget that even streaming every
block cannot meet is refused with a clear message."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from wanlora.recipes import load_recipe
from wanlora.train.speed.checkpointing import spread
from wanlora.train.speed.memory_plan import WAN_14B, DitShape, GiB, SpeedPlan, usable_bytes
from wanlora.train.speed.swap_plan import (
    PCIE4_X16_BYTES_PER_S,
    SwapPlan,
    h2d_bytes_per_step,
    host_load_peak_bytes,
    plan_with_swap,
    streamed_block_bytes,
    swap_peak_bytes,
)

CUDA = torch.device("cuda")  # only a label here: a budget is given, so nothing asks the GPU
TOKENS = 3600  # 960x960, batch 1
BLOCK = 8 * 5120 * 5120 + 2 * 5120 * 13824  # one 14B block's ten linears, 1 byte each in fp8


def plan_at(budget_gb, **kwargs) -> SwapPlan:
    update = {"max_vram_gb": budget_gb, **kwargs.pop("update", {})}
    training = load_recipe("wan22-t2v").training.model_copy(update=update)
    return plan_with_swap(training, CUDA, torch.float16, tokens=TOKENS, shape=WAN_14B, **kwargs)


def test_24_gib_needs_no_swap():
    plan = plan_at(24)
    assert (plan.blocks_swapped, plan.swap_indices, plan.h2d_bytes_per_step) == (0, (), 0)
    assert (plan.fp8_storage, plan.recompute, plan.fits) == (True, 36, True)  # issue 12's plan
    assert plan.describe() == SpeedPlan.describe(plan)


@pytest.mark.parametrize(("budget", "swapped"), [(16, 12), (12, 24), (8, 37)])
def test_small_cards_stream_the_fewest_blocks_that_fit(budget, swapped):
    plan = plan_at(budget)
    assert isinstance(plan, SpeedPlan)  # prepare_base / prepare_for_speed take it as is
    assert plan.fits and plan.blocks_swapped == swapped
    assert plan.swap_indices == tuple(spread(swapped, 40))  # spread over the depth
    assert (plan.fp8_storage, plan.recompute, plan.compile) == (True, 40, True)
    assert plan.load_dtype == torch.float8_e4m3fn and not plan.fp8_transposed
    assert plan.predicted_peak <= usable_bytes(budget * GiB)
    one_fewer = swap_peak_bytes(WAN_14B, TOKENS, swapped - 1)
    assert one_fewer > usable_bytes(budget * GiB)  # the fewest that fit
    # the ring holds 2 blocks: streaming k saves k - 2 blocks of the 17.6 GiB resident plan
    resident = swap_peak_bytes(WAN_14B, TOKENS, 0)
    assert resident - plan.predicted_peak == (swapped - 2) * BLOCK
    # host: the pinned copies (+ the process), under the 32 GiB even while loading
    assert plan.block_bytes == BLOCK
    assert plan.host_bytes - swapped * BLOCK == 3 * GiB
    assert host_load_peak_bytes(WAN_14B, plan) < 32 * GiB
    # forward + recompute copy every swapped block but the two a slot still holds
    assert plan.h2d_bytes_per_step == 2 * (swapped - 2) * BLOCK


def test_the_plan_line_says_what_it_chose():
    text = plan_at(12).describe()
    assert text == (
        "fp8 storage, 24/40 blocks streamed from host memory, 40/40 recomputed, compiled; "
        "predicted peak 10.4 GiB of 12.0 GiB; host RAM ~11 GiB; 15.5 GB host->GPU per step "
        "(~0.6 s at PCIe 4.0 x16, overlapped)"
    )


def test_smaller_budgets_stream_more_blocks():
    budgets = [20 - 0.25 * i for i in range(53)]  # 20 GiB down to 7 GiB
    counts = [plan_at(b).blocks_swapped for b in budgets]
    assert counts == sorted(counts)
    assert counts[0] == 0 and counts[-1] == 40
    for budget in budgets:
        plan = plan_at(budget)
        assert plan.fits and plan.predicted_peak <= usable_bytes(plan.budget)


def test_projected_step_time_overlaps_the_copies():
    compute = 0.684  # exact-lowmem (fp8, 40/40 recomputed, compiled) on the H100, RESULTS.md
    assert plan_at(24).projected_step_seconds(compute) == pytest.approx(compute)
    for budget in (16, 12, 8):
        plan = plan_at(budget)
        transfer = plan.transfer_seconds(PCIE4_X16_BYTES_PER_S)
        assert transfer == pytest.approx(plan.h2d_bytes_per_step / 25e9)
        projected = plan.projected_step_seconds(compute)
        assert max(compute, transfer) < projected < compute + transfer  # overlapped, not free
        assert plan.projected_step_seconds(compute, 2 * PCIE4_X16_BYTES_PER_S) <= projected


def test_a_budget_even_streaming_everything_cannot_meet():
    plan = plan_at(6)
    assert not plan.fits and plan.blocks_swapped == 40
    what, fix = plan.problem()
    assert "does not fit the 6.0 GiB budget; it needs about 6.7 GiB" in what
    assert "40/40 blocks streamed" in what
    assert "--max-vram" in fix and "resolution" in fix
    assert plan_at(7).problem() is None


def test_no_recompute_means_no_swap():
    plan = plan_at(16, update={"checkpointing": "none"})
    assert not plan.fits and plan.blocks_swapped == 0
    what, fix = plan.problem()
    assert "streamed blocks must recompute" in what and "checkpointing" in fix


def test_an_explicit_count_and_other_devices():
    plan = plan_at(16, blocks_to_swap=16)  # the reference's --blocks_to_swap 16
    assert plan.blocks_swapped == 16 and plan.fits
    assert plan.predicted_peak == swap_peak_bytes(WAN_14B, TOKENS, 16)
    training = load_recipe("wan22-t2v").training.model_copy(update={"max_vram_gb": 8})
    cpu = plan_with_swap(training, torch.device("cpu"), torch.float16, tokens=16, shape=WAN_14B)
    assert cpu.blocks_swapped == 0 and cpu.predicted_peak is None  # the CPU has no budget


def test_streamed_bytes_match_what_block_swap_moves(tmp_path):
    from wanlora.models import load_dit
    from wanlora.models.tiny import write_tiny_dit
    from wanlora.train.speed.block_swap import install_block_swap
    from wanlora.train.speed.prepare import prepare_base

    path = write_tiny_dit(tmp_path / "dit.safetensors", num_layers=4)
    shape = DitShape.from_header(path)
    model, _ = load_dit(path, dtype=torch.float8_e4m3fn, fp8_round=True)
    prepare_base(model, SpeedPlan(torch.bfloat16, True, False, False, "full"))
    training = load_recipe("wan22-t2v").training.model_copy(update={"max_vram_gb": 8})
    plan = plan_with_swap(training, CUDA, torch.bfloat16, tokens=64, shape=shape)
    assert install_block_swap(model, plan, "cpu") is None  # the tiny model fits: no swap
    plan = dataclasses.replace(plan, swap_indices=(0, 1, 2, 3), blocks_swapped=4)
    swap = install_block_swap(model, plan, "cpu")
    assert swap.indices == [0, 1, 2, 3] and swap.ring == plan.ring == 2
    assert swap.block_bytes == streamed_block_bytes(shape)
    assert h2d_bytes_per_step(4, swap.block_bytes) == 2 * 2 * swap.block_bytes
