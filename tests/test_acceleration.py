"""wanlora.train.speed on the CPU: fp8 storage is exact, fp8 compute is close,
the plan keeps the recipe's numerics by default, the recompute policy is honoured."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wanlora.recipes import load_recipe
from wanlora.train.speed.fp8_linear import Fp8Linear, keep_transposed_weights
from wanlora.train.speed.memory_plan import SpeedPlan, plan_speed, tokens_for_resolution
from wanlora.train.speed.prepare import prepare_base, prepare_for_speed

CPU = torch.device("cpu")


def _forward_backward(model):
    """One bf16-autocast forward + backward of a tiny DiT: its output and LoRA gradients."""
    from wanlora.lora.inject import lora_parameters

    torch.manual_seed(1)
    x = torch.randn(1, 16, 1, 8, 8)
    ctx = torch.randn(1, 512, model.config.text_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.tensor([500.0]), ctx, return_dict=False)[0]
    out.float().square().mean().backward()
    return out.detach(), [p.grad.clone() for p in lora_parameters(model)]


def fp8_valued_linear(inp=64, out=48, dtype=torch.float16, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(inp, out)
    with torch.no_grad():
        lin.weight.copy_((torch.randn(out, inp) * 0.05).to(torch.float8_e4m3fn).float())
        lin.bias.copy_(torch.randn(out) * 0.01)
    return lin.to(dtype)


def test_fp8_storage_is_bit_identical_to_16_bit():
    lin = fp8_valued_linear(dtype=torch.bfloat16)
    fp8 = Fp8Linear(lin, torch.bfloat16)
    assert fp8.weight.dtype == torch.float8_e4m3fn and fp8.unit_scale
    x = torch.randn(32, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fp8(x), lin(x))


def test_fp8_compute_is_close_and_has_input_gradients():
    lin = fp8_valued_linear(dtype=torch.float32)
    fast = Fp8Linear(lin, torch.float32, fp8_compute=True)
    x = torch.randn(32, 64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = fast(x), lin(x_ref)
    rel = (y - y_ref).norm() / y_ref.norm()
    assert 0 < rel < 0.08
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert (x.grad - x_ref.grad).norm() / x_ref.grad.norm() < 0.15
    assert fast.weight.grad is None


def test_kept_transposed_weight_gives_the_same_fp8_products():
    lin = fp8_valued_linear(dtype=torch.float32)
    results = []
    for keep in (False, True):
        fast = nn.Sequential(Fp8Linear(lin, torch.float32, fp8_compute=True))
        if keep:
            assert keep_transposed_weights(fast) == 64 * 48
            assert fast[0].weight_t.shape == (64, 48) and fast[0].weight_t.is_contiguous()
            assert "weight_t" not in fast.state_dict()  # never saved
        torch.manual_seed(3)
        x = torch.randn(32, 64, requires_grad=True)
        y = fast(x)
        y.backward(torch.randn_like(y))
        results.append((y.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_skipping_peft_input_cast_is_bit_identical_under_autocast(tmp_path):
    from wanlora.lora.inject import add_lora, lora_parameters
    from wanlora.models import load_dit
    from wanlora.models.tiny import write_tiny_models
    from wanlora.train.speed.lora_input import skip_lora_input_cast

    dit = write_tiny_models(tmp_path).dit_low
    lora = load_recipe("wan22-t2v").lora
    results = []
    for skip in (False, True):
        model, _ = load_dit(dit, dtype=torch.bfloat16, fp8_round=True)
        torch.manual_seed(0)
        add_lora(model, lora)
        with torch.no_grad():
            for param in lora_parameters(model):
                param.normal_(0, 0.05)  # B is zero at init: give the LoRA path some weight
        if skip:
            skip_lora_input_cast(model)
        results.append(_forward_backward(model))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def test_non_fp8_weights_get_a_scale():
    lin = nn.Linear(32, 16)
    fp8 = Fp8Linear(lin, torch.float32)
    assert not fp8.unit_scale
    x = torch.randn(4, 32)
    assert torch.allclose(fp8(x), lin(x), rtol=0.1, atol=0.05)


def test_default_plan_keeps_the_recipe_numerics_on_cpu():
    training = load_recipe("wan22-t2v").training
    assert (training.speed, training.compile) == ("exact", "auto")
    plan = plan_speed(training, CPU, torch.float16, weight_count=10**6, tokens=3600)
    assert plan == SpeedPlan(torch.float16, False, False, False, "full", 3600)
    assert plan.load_dtype == torch.float16
    fast = plan_speed(training.model_copy(update={"speed": "fast"}), CPU, torch.float16)
    assert fast.fp8_storage and fast.fp8_compute
    off = plan_speed(
        training.model_copy(update={"gradient_checkpointing": False}), CPU, torch.float16
    )
    assert off.checkpointing == "none"
    assert tokens_for_resolution((960, 960)) == 3600


def test_fp8_storage_on_needs_fp8_base():
    from pydantic import ValidationError

    training = load_recipe("wan22-t2v").training
    with pytest.raises(ValidationError, match="fp8_base"):
        training.model_validate({**training.model_dump(), "fp8_base": False, "fp8_storage": "on"})


def test_fp8_loaded_model_equals_16_bit_load(tmp_path):
    from wanlora.lora.inject import add_lora, lora_parameters
    from wanlora.models import load_dit
    from wanlora.models.tiny import write_tiny_models

    paths = write_tiny_models(tmp_path)
    dit = paths.dit_high
    lora = load_recipe("wan22-t2v").lora
    outs = []
    for fp8 in (False, True):
        plan = SpeedPlan(torch.bfloat16, fp8, False, False, "full")
        model, _ = load_dit(dit, dtype=plan.load_dtype, fp8_round=True)
        prepare_base(model, plan)
        torch.manual_seed(0)
        add_lora(model, lora)
        prepare_for_speed(model, plan, CPU)
        model.train()
        assert model.wanlora_checkpointed == list(range(len(model.blocks)))
        assert all(p.dtype == torch.float32 for p in lora_parameters(model))
        outs.append(_forward_backward(model))
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1], strict=True))
