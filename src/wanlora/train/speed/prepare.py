"""A DiT made ready for training by its speed plan: the two calls the setup makes.

plan = plan_speed(...)            memory_plan.py: storage, recompute count, compile
load_dit(..., dtype=plan.load_dtype)
prepare_base(model, plan)         before add_lora: fp8 block linears (fp8_linear.py)
add_lora(model, ...)
prepare_for_speed(model, plan)    after add_lora: LoRA inputs (lora_input.py), folded text
                                  padding (text_fold.py), recompute (checkpointing.py),
                                  compiled blocks (compile.py)
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ...lora.inject import lora_target_modules
from .checkpointing import blocks_to_checkpoint, set_checkpointing
from .compile import compile_blocks
from .fp8_linear import E4M3, E5M2, Fp8Linear, keep_transposed_weights
from .lora_input import skip_lora_input_cast
from .memory_plan import GiB, SpeedPlan
from .text_fold import install_text_fold

log = logging.getLogger(__name__)


def prepare_base(model: nn.Module, plan: SpeedPlan) -> nn.Module:
    """Before add_lora: fp8 block linears (storage and/or compute) and 16-bit everything else.

    A model loaded in float8_e4m3fn (plan.load_dtype) gets every tensor other than the block
    linears' weights upcast to the compute dtype (the time path stays float32), so it holds
    exactly what a 16-bit load of the fp8-rounded file holds.
    """
    if plan.fp8_storage or plan.fp8_compute:
        for name in lora_target_modules(model):
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            linear = getattr(parent, leaf)
            if isinstance(linear, Fp8Linear):
                continue
            setattr(parent, leaf, Fp8Linear(linear, plan.compute_dtype, plan.fp8_compute))
    if plan.fp8_transposed:
        keep_transposed_weights(model)
    for module in model.modules():
        if isinstance(module, Fp8Linear):
            continue
        for leaf, param in list(module._parameters.items()):
            if param is not None and param.dtype in (E4M3, E5M2):
                module._parameters[leaf] = nn.Parameter(
                    param.data.to(plan.compute_dtype), requires_grad=False
                )
    return model


def prepare_for_speed(model: nn.Module, plan: SpeedPlan, device: torch.device) -> nn.Module:
    """After add_lora: LoRA inputs, the folded text padding, the recompute policy, compiled
    blocks. Returns the model."""
    skip_lora_input_cast(model)
    if plan.text_fold:
        install_text_fold(model)
    indices = blocks_to_checkpoint(model, plan, device)
    set_checkpointing(model, indices)
    model.wanlora_checkpointed = indices  # for logs and benchmarks
    if plan.compile:
        compile_blocks(model)
    log.info(
        "speed: fp8 storage %s, fp8 compute %s, compiled %s, text padding folded %s, "
        "%d/%d blocks recomputed%s",
        plan.fp8_storage,
        plan.fp8_compute,
        plan.compile,
        plan.text_fold,
        len(indices),
        len(model.blocks),
        ""
        if plan.predicted_peak is None
        else f" (predicted peak {plan.predicted_peak / GiB:.1f} GiB, budget {plan.budget / GiB:.1f} GiB)",
    )
    return model
