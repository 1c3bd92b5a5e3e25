"""Epoch-end sampling with a block-swapped model (issue 23's known risk): the expert
residency never moves a model whose blocks stream from host memory, and the model samples
in place (its no-grad forward streams the blocks as training does)."""

from __future__ import annotations

import pytest
import torch

from wanlora.lora.inject import add_lora
from wanlora.models import load_dit
from wanlora.models.tiny import write_tiny_dit
from wanlora.recipes import load_recipe
from wanlora.sampling.pipeline import ExpertResidency, move_unless_streamed, streams_its_blocks
from wanlora.train.speed.block_swap import BlockSwap, block_weights
from wanlora.train.speed.memory_plan import SpeedPlan
from wanlora.train.speed.prepare import prepare_base, prepare_for_speed

CPU = torch.device("cpu")
META = torch.device("meta")  # a real move target: anything moved there loses its values


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    return write_tiny_dit(tmp_path_factory.mktemp("dit") / "dit.safetensors", num_layers=4)


def build(dit):
    plan = SpeedPlan(torch.bfloat16, True, False, False, "full")
    model, _ = load_dit(dit, dtype=plan.load_dtype, fp8_round=True)
    prepare_base(model, plan)
    torch.manual_seed(0)
    add_lora(model, load_recipe("wan22-t2v").lora)
    prepare_for_speed(model, plan, CPU)
    return model


@torch.no_grad()
def sample_forward(model):
    torch.manual_seed(3)
    x = torch.randn(1, 16, 1, 8, 8)
    ctx = torch.randn(1, 512, model.config.text_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x, torch.tensor([500.0]), ctx, return_dict=False)[0]


def pointers(model):
    return [w.data_ptr() for b in model.blocks for w in block_weights(b)]


def test_residency_never_moves_a_block_swapped_model(dit):
    swapped, other = build(dit), build(dit)
    expected = sample_forward(swapped)
    BlockSwap(swapped, [1, 2], CPU)
    assert streams_its_blocks(swapped) and not streams_its_blocks(other)
    before = pointers(swapped)

    residency = ExpertResidency({"high": swapped, "low": other}, CPU, offload=True,
                                offload_device=META)  # fmt: skip
    assert residency.active == "low"  # the plain one, found in place on the device
    residency.activate("high")  # the boundary switch: the plain one offloads, swapped stays
    residency.activate("high")
    assert residency.events == [("offload", "low")]
    assert all(p.device == META for p in other.parameters())
    assert pointers(swapped) == before  # never moved: the host regions and slots it had
    assert all(p.device == CPU for p in swapped.parameters())
    residency.close()

    ExpertResidency({"high": swapped}, META, offload=False)  # "every expert to the device"
    move_unless_streamed(swapped, META)  # what epoch-end sampling does after rendering
    assert pointers(swapped) == before
    assert torch.equal(sample_forward(swapped), expected)  # samples in place, streaming


def test_a_plain_model_still_moves(dit):
    plain = build(dit)
    move_unless_streamed(plain, META)
    assert all(p.device == META for p in plain.parameters())
