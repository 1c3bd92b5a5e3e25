"""Training failures as one line each: what happened, and what the user does next."""

from __future__ import annotations

import math

from ..device_memory import out_of_memory_detail
from ..errors import WanloraError


def out_of_memory(expert: str, when: str, exc: BaseException) -> WanloraError:
    return WanloraError(
        f"{expert}: out of GPU memory {when} ({out_of_memory_detail(exc)})",
        "close other programs that use the GPU (`nvidia-smi` lists them), or pass --max-vram N "
        "(a little under the card's memory) so the plan stores weights in fp8 and recomputes "
        "more blocks; `wanlora doctor` shows the plan; run the same command again to resume",
    )


def completed(steps: int) -> str:
    return f"{steps} completed step{'' if steps == 1 else 's'}"


def check_finite(loss: float | None, expert: str, step: int) -> None:
    """Refuse a NaN or infinite loss before the optimiser step spreads it into the LoRA."""
    if loss is not None and not math.isfinite(loss):
        raise WanloraError(
            f"{expert}: the loss became {loss} at step {step} (numerical overflow)",
            "run `wanlora train` again to resume from the last good state; if it repeats, "
            "lower optimizer.learning_rate or train from a bf16 DiT file with "
            'training.mixed_precision = "bf16"',
        )
