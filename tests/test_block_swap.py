"""wanlora.train.speed.block_swap on the CPU: streaming blocks' weights through a ring of slots gives
bit-identical outputs and LoRA gradients, reuses its buffers, copies what the plan predicts,
refuses swapped blocks that are not recomputed, and comes off cleanly."""

from __future__ import annotations

import pytest
import torch

from wanlora.lora.inject import add_lora, lora_parameters
from wanlora.models import load_dit
from wanlora.models.tiny import write_tiny_dit
from wanlora.recipes import load_recipe
from wanlora.train.speed.block_swap import BlockSwap, block_weight_bytes, block_weights
from wanlora.train.speed.memory_plan import SpeedPlan
from wanlora.train.speed.prepare import prepare_base, prepare_for_speed
from wanlora.train.speed.swap_plan import h2d_bytes_per_step

CPU = torch.device("cpu")
LAYERS = 6


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    return write_tiny_dit(tmp_path_factory.mktemp("dit") / "dit.safetensors", num_layers=LAYERS)


def build(dit, checkpointing="full"):
    """The tiny DiT as training prepares it: fp8 storage, LoRA (with weight), recompute."""
    plan = SpeedPlan(torch.bfloat16, True, False, False, checkpointing)
    model, _ = load_dit(dit, dtype=plan.load_dtype, fp8_round=True)
    prepare_base(model, plan)
    torch.manual_seed(0)
    add_lora(model, load_recipe("wan22-t2v").lora)
    with torch.no_grad():
        for param in lora_parameters(model):
            param.normal_(0, 0.05)  # B is zero at init: give the LoRA path some weight
    prepare_for_speed(model, plan, CPU)
    return model.train()


def step(model, seed=1):
    """One bf16-autocast forward + backward: the output and the LoRA gradients."""
    torch.manual_seed(seed)
    x = torch.randn(1, 16, 1, 8, 8)
    ctx = torch.randn(1, 32, model.config.text_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.tensor([500.0]), ctx, return_dict=False)[0]
    out.float().square().mean().backward()
    grads = [p.grad.clone() for p in lora_parameters(model)]
    for p in lora_parameters(model):
        p.grad = None
    return out.detach(), grads


def assert_same(a, b):
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1], strict=True))


@pytest.fixture(scope="module")
def reference(dit):
    model = build(dit)
    return [step(model, seed) for seed in (1, 2)]


@pytest.mark.parametrize("indices", [[], [1, 3, 4], list(range(LAYERS))])
def test_swapped_steps_are_bit_identical(dit, reference, indices):
    model = build(dit)
    swap = BlockSwap(model, indices, CPU)
    for seed, expected in zip((1, 2), reference, strict=True):
        assert_same(step(model, seed), expected)
    k, ring = len(indices), swap.ring
    # the first step fills the ring (k loads forward, k - ring backward), then 2 (k - ring)
    assert swap.stats.loads == (0 if k == 0 else k + (k - ring) + 2 * (k - ring))


def test_ring_buffers_are_reused_and_the_copies_match_the_plan(dit, reference):
    model = build(dit)
    indices = [0, 2, 3, 5]
    swap = BlockSwap(model, indices, CPU)
    slots = {t.data_ptr() for t in swap.slot_tensors()}
    assert len(slots) == swap.ring * 10  # ten linears a block, `ring` sets, nothing more
    assert swap.device_bytes == swap.ring * block_weight_bytes(model.blocks[0])
    assert swap.host_bytes == len(indices) * swap.block_bytes
    seen: set[int] = set()

    def record(block, _args):  # registered after the swap's hook: sees what the block uses
        seen.update(w.data_ptr() for w in block_weights(block))

    for i in indices:
        model.blocks[i].register_forward_pre_hook(record)
    step(model, 1)  # the first step also fills the ring
    before = swap.stats.bytes
    assert_same(step(model, 2), reference[1])
    assert seen <= slots  # every swapped block ran on ring slots
    assert swap.stats.bytes - before == h2d_bytes_per_step(len(indices), swap.block_bytes)
    # resident blocks are untouched; parked swapped weights hold their own values
    held = {slot.block for slot in swap._slots}
    for i in set(indices) - held:
        assert all(w.data_ptr() not in slots for w in block_weights(model.blocks[i]))


def test_bigger_ring_prefetches_further_with_the_same_values(dit, reference):
    model = build(dit)
    swap = BlockSwap(model, range(LAYERS), CPU, ring=3)
    assert len(swap.slot_tensors()) == 30
    for seed, expected in zip((1, 2), reference, strict=True):
        assert_same(step(model, seed), expected)
    assert swap.stats.loads == LAYERS + (LAYERS - 3) + 2 * (LAYERS - 3)


def test_inference_without_recompute_streams_too(dit):
    plain, swapped = build(dit, "none").eval(), build(dit, "none").eval()
    BlockSwap(swapped, [0, 1, 4, 5], CPU)
    x = torch.randn(1, 16, 1, 8, 8)
    ctx = torch.randn(1, 512, plain.config.text_dim)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = plain(x, torch.tensor([500.0]), ctx, return_dict=False)[0]
        b = swapped(x, torch.tensor([500.0]), ctx, return_dict=False)[0]
    assert torch.equal(a, b)


def test_swapped_blocks_must_be_recomputed(dit):
    model = build(dit, "none")
    BlockSwap(model, [1, 2, 3], CPU)
    with pytest.raises(RuntimeError, match="must be recomputed"):
        step(model)


def test_transposed_fast_copies_are_refused(dit):
    from wanlora.train.speed.fp8_linear import keep_transposed_weights

    plan = SpeedPlan(torch.float32, True, True, False, "full")
    model, _ = load_dit(dit, dtype=plan.load_dtype, fp8_round=True)
    prepare_base(model, plan)
    keep_transposed_weights(model)
    with pytest.raises(ValueError, match="transposed"):
        BlockSwap(model, [0, 1, 2], CPU)


def test_bad_arguments_are_refused(dit):
    model = build(dit)
    with pytest.raises(ValueError, match="out of range"):
        BlockSwap(model, [LAYERS], CPU)
    with pytest.raises(ValueError, match="ring"):
        BlockSwap(model, [0, 1, 2], CPU, ring=1)


def test_remove_puts_the_weights_back(dit, reference):
    model = build(dit)
    swap = BlockSwap(model, [0, 2, 4], CPU)
    step(model, 1)
    hosts = {h.data_ptr() for views in swap._host.values() for h in views}
    slots = {t.data_ptr() for t in swap.slot_tensors()}
    swap.remove()
    assert model.wanlora_block_swap is None
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert all(not block._forward_pre_hooks for block in model.blocks)
    for block in model.blocks:
        assert all(w.data_ptr() not in hosts | slots for w in block_weights(block))
    assert_same(step(model, 2), reference[1])
    assert swap.stats.loads == 3 + 1  # the first step's; nothing streamed after removal


@pytest.mark.slow  # compiles the blocks (~1-2 min on a loaded CPU)
def test_compiled_blocks_stream_bit_identically(dit):
    """Compiled blocks (min-cut partitioner, as inductor's) with the swap's hooks: same values
    as compiled resident blocks, no recompiles from re-pointing the weights, and after remove."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    results, graphs = [], []
    for indices in (None, [0, 2, 3, 5]):
        model = build(dit)
        swap = None if indices is None else BlockSwap(model, indices, CPU)
        for block in model.blocks:
            block.compile(backend="aot_eager_decomp_partition")
        results.append([step(model, seed) for seed in (1, 2)])
        graphs.append(counters["stats"]["unique_graphs"])
    assert_same(results[0][0], results[1][0])
    assert_same(results[0][1], results[1][1])
    assert graphs[0] > 0 and graphs[1] == graphs[0]  # the swapped blocks compiled nothing new
    swap.remove()
    assert_same(step(model, 2), results[0][1])
