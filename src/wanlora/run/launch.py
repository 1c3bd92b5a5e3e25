"""A launch the user makes: `torchrun` / `accelerate launch` runs this module in every process.

    torchrun --nproc-per-node 2 -m wanlora.run.launch DIR [--expert high]
    accelerate launch --num_processes 2 -m wanlora.run.launch DIR

The process group comes from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK);
each process trains every expert data-parallel over all of them (a DataParallel strategy),
one expert after the other, through experts.run_expert as `wanlora train` does. Rank 0
checks the dataset and builds the cache before the others read it; rank 0 alone prints
progress, renders the epoch-end samples and writes files.

SIGINT / SIGTERM (the launcher forwards its own to every process): each process's wish to
stop travels in the next step's all_reduce, every rank stops after that step, rank 0 saves
its state; before the first step a process stops at once (signals.py). Exit 130 / 143.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from ..cache.build import build_cache
from ..device_memory import free_device_memory
from ..errors import WanloraError
from ..recipes import load_project
from ..train.callbacks import StepReport, StopTraining
from ..train.data_parallel import WORKER_ENV, DataParallel
from ..train.strategy import ParallelStrategy, SingleProcess
from .callbacks import StepPrinter, epoch_monitor
from .checks import check_dataset_clean
from .experts import run_expert
from .signals import EXIT_CODES, Interrupted, StopRequest, stop_on_signals
from .validation import verdict_lines, write_verdict


def main(argv: list[str] | None = None) -> int:
    """`torchrun --nproc-per-node N -m wanlora.run.launch DIR [--expert high]`."""
    parser = argparse.ArgumentParser(
        prog="python -m wanlora.run.launch",
        description="Train a project's experts data-parallel over the launcher's processes.",
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--expert", "-e", action="append", help="only this expert (repeatable)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--restart", action="store_true")
    args = parser.parse_args(argv)
    with stop_on_signals(second_aborts=False) as request:  # the launcher ends us on a repeat
        return _launch(args, request)


def _launch(args: argparse.Namespace, request: StopRequest) -> int:
    os.environ.update(WORKER_ENV)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    def wish() -> bool:
        return request.signum is not None

    strategy: ParallelStrategy = (
        DataParallel.init(rank, world, device, stop_check=wish)
        if world > 1
        else SingleProcess(stop_check=wish)
    )
    try:
        project = load_project(args.directory)
        experts = args.expert or list(project.config.experts)
        if rank == 0:  # lint and cache once, before the others read the cache
            check_dataset_clean(project)
            build_cache(project, device=device)
        strategy.barrier()
        printer = StepPrinter() if rank == 0 else None

        def on_step(report: StepReport) -> None:
            if printer is not None:
                printer(report)
            if strategy.should_stop():  # the ranks agreed at this step
                raise StopTraining

        for expert in experts:
            request.expert_done()  # its caching and loading: a signal stops at once
            with epoch_monitor(project, device, rank == 0) as on_epoch_end:
                result = run_expert(
                    project,
                    expert,
                    device=device,
                    overwrite=args.overwrite,
                    restart=args.restart,
                    on_step=request.step_callback(on_step, stops=False),
                    on_epoch_end=request.epoch_callback(on_epoch_end, stops=world == 1),
                    strategy=strategy,
                )
            free_device_memory(device)  # before the next expert plans its memory
            strategy.barrier()
            if rank == 0:
                print(f"{expert}: {result.steps} steps -> {result.lora_path}", flush=True)
        if rank == 0:  # does each LoRA move the model (output/verdict.json)
            write_verdict(project)
            for line in verdict_lines(project):
                print(line, flush=True)
        return 0
    except (StopTraining, Interrupted):
        if rank == 0:
            where = f"after step {request.last.step}, state saved" if request.last else "at once"
            print(f"interrupted: stopped {where}; run the same command to resume", flush=True)
        return EXIT_CODES.get(request.signum, 130)
    except WanloraError as exc:
        print(f"error (rank {rank}): {exc.one_line()}", file=sys.stderr, flush=True)
        return 1
    finally:
        strategy.close()


if __name__ == "__main__":
    sys.exit(main())
