"""Fill a model built on the meta device with tensors one at a time.

A 14B DiT is 28 GB in fp16. Building the model normally and then loading a state dict
needs twice that in RAM; building it on the meta device (no storage) and assigning each
tensor as it is read from disk needs the model's size plus one tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from accelerate import init_empty_weights
from torch import nn

from wanlora.errors import WanloraError

ModelT = TypeVar("ModelT", bound=nn.Module)


def build_on_meta(factory: Callable[[], ModelT]) -> ModelT:
    """Construct a model whose parameters have no storage; buffers (e.g. RoPE tables) are real."""
    with init_empty_weights(include_buffers=False):
        return factory()


def assign_parameter(model: nn.Module, name: str, tensor: torch.Tensor, path: Path) -> None:
    """Replace parameter `name` of `model` by `tensor` (shapes must agree). Frozen."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    current = module._parameters.get(leaf)
    if current is None:
        raise WanloraError(f"{path}: internal error, the model has no parameter {name}")
    if tuple(current.shape) != tuple(tensor.shape):
        raise WanloraError(
            f"{path}: tensor for {name} has shape {tuple(tensor.shape)}, "
            f"the model needs {tuple(current.shape)} (wrong or damaged file)",
            "use the file the recipe names; re-download it if it was interrupted",
        )
    module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def check_fully_loaded(model: nn.Module, path: Path) -> None:
    """Every parameter and buffer must have come from the file (none left on meta)."""
    left = [n for n, p in model.named_parameters(remove_duplicate=False) if p.is_meta]
    left += [n for n, b in model.named_buffers(remove_duplicate=False) if b.is_meta]
    if left:
        shown = ", ".join(left[:5]) + (f" (+{len(left) - 5} more)" if len(left) > 5 else "")
        raise WanloraError(
            f"{path} is missing {len(left)} tensor(s) the model needs: {shown}",
            "the file is incomplete or of another model; re-download the file the recipe names",
        )


def check_key_sets(
    path: Path,
    file_names: list[str],
    model: nn.Module,
    *,
    to_model: Callable[[str], str | None],
    to_file: Callable[[str], str | None],
    extra: tuple[str, str],
    missing: str,
) -> None:
    """Every file key maps to a model parameter and every model parameter has a file key.

    `extra` is (what the model is, the fix) for keys the model lacks; `missing` names the
    model in the message for an incomplete file.
    """
    model_names = {n for n, _ in model.named_parameters()}
    mapped = {name: to_model(name) for name in file_names}
    unexpected = sorted(n for n, m in mapped.items() if m is None or m not in model_names)
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else "")
        raise WanloraError(
            f"{path} has {len(unexpected)} tensor(s) {extra[0]} does not have: {shown}", extra[1]
        )
    absent = sorted(model_names - set(mapped.values()))
    if absent:
        shown = ", ".join(to_file(n) or n for n in absent[:5])
        raise WanloraError(
            f"{path} is missing {len(absent)} tensor(s) of {missing}: {shown}",
            "the file is incomplete; re-download it",
        )
