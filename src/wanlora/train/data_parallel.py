"""Data-parallel maths: one expert's run over N ranks equals the one-process run.

One expert's run over N processes is exactly the single-process run with
`gradient_accumulation_steps` multiplied by N (`effective_config`). The epoch order is the
recipe's; each group of micro-batches that makes one optimiser step is dealt out to the
ranks (batch b to rank b % N, `owns`); every rank replays the random draws (noise,
timesteps) of the other ranks' batches from the shared generator (the loop does, through
train/step.py), so each batch gets the noise it would get in one process; at the step, one
torch.distributed all_reduce sums the LoRA gradients (each already scaled by
1/(accumulation x N)), the step's losses and the ranks' stop wishes (`reduce`). Same
epochs, N times fewer optimiser steps (the recipe's 1800 become 900 with N = 2), effective
batch N, lr unchanged. Rank 0 alone writes files; every rank resumes from the same state.

This module is the strategy only (strategy.py's interface) and joining the process group.
Spawning the processes, their pipes and the torchrun entry are the run layer's
(wanlora.run.workers, wanlora.run.launch).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from ..recipes.schema import RecipeConfig

# every process's environment: NVLink SHARP / multicast off (not available on the rented
# machines this tool targets, and NCCL's probing of it can hang or fail there)
WORKER_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
PG_TIMEOUT = datetime.timedelta(minutes=60)  # rank 0 may build the cache while others wait


class DataParallel:
    """This rank's part of one expert's data-parallel run (a ParallelStrategy, strategy.py)."""

    def __init__(self, rank: int, world: int, stop_check: Callable[[], bool] | None = None):
        self.rank, self.world = rank, world
        self.writes_files = rank == 0  # rank 0 alone writes LoRA, state and TensorBoard files
        self.stop_check = stop_check  # this rank's wish to stop; all ranks stop if any wishes
        self.stop_requested = False  # agreed at the last step: every rank sees the same value
        self._losses: list[float] = []

    @classmethod
    def init(
        cls,
        rank: int,
        world: int,
        device: torch.device,
        *,
        store_path: Path | None = None,
        stop_check: Callable[[], bool] | None = None,
    ) -> DataParallel:
        """Join the process group: a FileStore (workers spawned by wanlora.run) or the launcher's
        env:// (torchrun, accelerate launch)."""
        os.environ.update(WORKER_ENV)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if store_path is not None:
            store = dist.FileStore(str(store_path), world)
            dist.init_process_group(
                backend, store=store, rank=rank, world_size=world, timeout=PG_TIMEOUT
            )
        else:
            dist.init_process_group(
                backend, init_method="env://", rank=rank, world_size=world, timeout=PG_TIMEOUT
            )
        return cls(rank, world, stop_check)

    def effective_config(self, config: RecipeConfig) -> RecipeConfig:
        """The single-process config this run is equal to: N times the accumulation."""
        training = config.training.model_copy(
            update={
                "gradient_accumulation_steps": config.training.gradient_accumulation_steps
                * self.world
            }
        )
        return config.model_copy(update={"training": training})

    def owns(self, batch_index: int) -> bool:
        # a step's group starts at a multiple of accumulation x N, so within every group the
        # ranks take turns: rank r trains positions r, r + N, r + 2N, ...
        return batch_index % self.world == self.rank

    def reduce(
        self, loss: float | None, stepped: bool, params: list[torch.nn.Parameter]
    ) -> float | None:
        """Note this rank's loss (None: another rank's batch); at a step, sum the gradients
        over the ranks and return the step's mean loss, the same on every rank."""
        if loss is not None:
            self._losses.append(loss)
        return self._all_reduce(params) if stepped else None

    def _all_reduce(self, params: list[torch.nn.Parameter]) -> float:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch._utils._flatten_dense_tensors(grads)
        wish = bool(self.stop_check and self.stop_check())
        stats = torch.tensor(
            [sum(self._losses), len(self._losses), float(wish)], dtype=flat.dtype
        ).to(flat.device)
        buffer = torch.cat([flat, stats])
        dist.all_reduce(buffer)  # one collective per optimiser step: gradients, losses, stop
        for p, g in zip(
            params,
            torch._utils._unflatten_dense_tensors(buffer[: flat.numel()], grads),
            strict=True,
        ):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        loss_sum, count, wishes = buffer[flat.numel() :].tolist()
        self._losses.clear()
        self.stop_requested = wishes > 0
        return loss_sum / count if count else 0.0

    def barrier(self) -> None:
        dist.barrier()

    def should_stop(self) -> bool:
        return self.stop_requested  # agreed at the last all_reduce

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
