"""Several processes (GPUs): the two experts at once, or one expert data-parallel.

Two ways to spread `wanlora train` over devices (docs/multi_gpu.md):

- expert-parallel: the high- and low-noise experts train at the same time, one process per
  expert, each on its own device. They share nothing but the cache (built once, in the
  parent, before the workers start) and need no process group.
- data-parallel over N processes: one expert's run is exactly the single-process run with
  `gradient_accumulation_steps` multiplied by N. The epoch order is the recipe's; each group
  of micro-batches that makes one optimiser step is dealt out to the ranks (batch b to rank
  b % N); every rank replays the random draws (noise, timesteps) of the other ranks' batches
  from the shared generator, so each batch gets the noise it would get in one process; at
  the step, one torch.distributed all_reduce sums the LoRA gradients (each already scaled by
  1/(accumulation x N)) and the step's losses. Same epochs, N times fewer optimiser steps
  (the recipe's 1800 become 900 with N = 2), effective batch N, lr unchanged.

Both can combine (4 GPUs: each expert data-parallel over 2). The parent spawns the workers
(multiprocessing spawn), a FileStore in a temporary folder rendezvouses each data-parallel
group (NCCL on GPUs, gloo on CPU); workers send StepReports to the parent over one pipe each. A
failure in one worker stops the others at their next step with their state saved. Rank 0
alone writes LoRA, state and TensorBoard files; every rank resumes from the same state.

`python -m wanlora.train.distributed DIR` is the entry for a launch the user makes
(`torchrun --nproc-per-node 2 -m wanlora.train.distributed DIR`, `accelerate launch -m ...`):
the process group comes from the launcher's environment.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue as queue_module
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ..device_memory import free_device_memory
from ..errors import WanloraError
from ..recipes import Project, load_project
from ..recipes.schema import RecipeConfig
from .loop import ExpertResult, StepCallback, StepReport, StopTraining, train_expert

log = logging.getLogger(__name__)

# every worker's environment: NVLink SHARP / multicast off (not available on the rented
# machines this tool targets, and NCCL's probing of it can hang or fail there)
WORKER_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
PG_TIMEOUT = datetime.timedelta(minutes=60)  # rank 0 may build the cache while others wait
STOP_GRACE_S = 300.0  # after a failure, how long the others get to reach a step and save


# --- data-parallel: one expert over N ranks --------------------------------------------------


class DataParallel:
    """This rank's part of one expert's data-parallel run (train_expert's `data_parallel`)."""

    def __init__(self, rank: int, world: int, stop_check: Callable[[], bool] | None = None):
        self.rank, self.world = rank, world
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
        """Join the process group: a FileStore (spawned here) or the launcher's env://."""
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

    def after_micro_batch(
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

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


# --- planning: which processes train what, on which device ---------------------------------


@dataclass(frozen=True)
class Job:
    """One expert on one or more devices (more than one: data-parallel)."""

    expert: str
    devices: tuple[str, ...]


def visible_devices() -> list[str]:
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def plan_jobs(
    experts: list[str],
    devices: list[str] | None,
    *,
    data_parallel: int = 1,
    parallel_experts: bool | None = None,
) -> list[list[Job]] | None:
    """Waves of jobs (the jobs of a wave run at the same time), or None for the plain loop.

    Default: the experts in parallel when there are devices for all of them (2 GPUs for the
    recipe's 2 experts, 4 with --data-parallel 2), else one expert after the other.
    """
    if data_parallel < 1:
        raise WanloraError(f"--data-parallel must be at least 1, got {data_parallel}")
    devices = list(devices) if devices else visible_devices()
    need = len(experts) * data_parallel
    if parallel_experts is None:
        parallel_experts = len(experts) >= 2 and len(devices) >= need
    if parallel_experts and len(experts) < 2:
        parallel_experts = False  # one expert: nothing to run side by side
    if parallel_experts:
        if len(devices) < need:
            raise WanloraError(
                f"training {len(experts)} experts in parallel"
                + (f" with --data-parallel {data_parallel}" if data_parallel > 1 else "")
                + f" needs {need} devices, {len(devices)} available ({', '.join(devices) or 'none'})",
                "pass --sequential, or list the devices with --devices cuda:0,cuda:1",
            )
        jobs = [
            Job(e, tuple(devices[i * data_parallel : (i + 1) * data_parallel]))
            for i, e in enumerate(experts)
        ]
        waves = [jobs]
    elif data_parallel > 1:
        if len(devices) < data_parallel:
            raise WanloraError(
                f"--data-parallel {data_parallel} needs {data_parallel} devices, "
                f"{len(devices)} available ({', '.join(devices) or 'no GPU'})",
                "use fewer processes, or --devices cpu,cpu to try it on the CPU",
            )
        waves = [[Job(e, tuple(devices[:data_parallel]))] for e in experts]
    else:
        return None
    for wave in waves:
        for job in wave:
            gpus = [d for d in job.devices if d.startswith("cuda")]
            if len(job.devices) > 1 and len(set(gpus)) < len(gpus):
                raise WanloraError(
                    f"{job.expert}: data-parallel ranks share a GPU ({', '.join(job.devices)})",
                    "give each rank its own GPU in --devices",
                )
    return waves


# --- the parent: spawn, relay progress, stop everyone on a failure --------------------------


@dataclass
class _Failure:
    expert: str
    what: str
    fix: str | None


def run_parallel(
    project: Project,
    waves: list[list[Job]],
    *,
    overwrite: bool = False,
    restart: bool = False,
    on_step: StepCallback | None = None,
    monitor: bool = False,
) -> list[ExpertResult]:
    """Build the cache once here, then run each wave's jobs in worker processes.

    `monitor`: each job's rank 0 runs a TrainingMonitor at its epoch ends (memory numbers,
    the [sample] images), as `wanlora train` does in one process."""
    from ..cache.build import build_cache
    from ..dataset.items import load_items

    unknown = [j.expert for wave in waves for j in wave if j.expert not in project.config.experts]
    if unknown:
        raise WanloraError(
            f"unknown expert {unknown[0]!r} for recipe {project.config.recipe}",
            f"use one of: {', '.join(project.config.experts)}",
        )
    build_cache(project, items=load_items(project), device=torch.device(waves[0][0].devices[0]))
    results: dict[str, ExpertResult] = {}
    for wave in waves:
        results.update(_run_wave(project, wave, overwrite, restart, on_step, monitor))
    return [results[job.expert] for wave in waves for job in wave]


def _run_wave(project, jobs, overwrite, restart, on_step, monitor) -> dict[str, ExpertResult]:
    ctx = multiprocessing.get_context("spawn")
    messages = _Inbox(ctx)
    stop = ctx.Event()
    n_procs = sum(len(j.devices) for j in jobs)
    threads = max(1, (os.cpu_count() or 1) // n_procs)
    devices = {job.expert: job.devices for job in jobs}
    results: dict[str, ExpertResult] = {}
    failure: _Failure | None = None
    interrupted = False
    deadline: float | None = None
    with tempfile.TemporaryDirectory(prefix="wanlora-dist-") as tmp:
        procs: dict[tuple[str, int], multiprocessing.Process] = {}
        saved_env = {k: os.environ.get(k) for k in WORKER_ENV}
        os.environ.update(WORKER_ENV)  # inherited by the spawned workers
        try:
            for j, job in enumerate(jobs):
                for rank in range(len(job.devices)):
                    spec = _WorkerSpec(
                        project.root,
                        job,
                        rank,
                        Path(tmp) / f"store-{j}",
                        overwrite,
                        restart,
                        threads,
                        monitor,
                        project.config.training.max_vram_gb,
                    )
                    proc = ctx.Process(
                        target=_worker,
                        args=(spec, _Outbox(messages.new_pipe()), stop),
                        name=f"wanlora-{job.expert}-{rank}",
                    )
                    proc.start()
                    messages.close_writer()  # the worker holds its own copy now
                    procs[(job.expert, rank)] = proc
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        reported: set[tuple[str, int]] = set()
        stopped: set[str] = set()
        dead_since: dict[tuple[str, int], float] = {}

        def fail(expert: str, what: str, fix: str | None) -> None:
            nonlocal failure, deadline
            if failure is None and not interrupted:
                failure = _Failure(expert, what, fix)
            stop.set()
            deadline = deadline or time.monotonic() + STOP_GRACE_S
            # the failed job's other ranks cannot finish a step without it: end them now
            for (e, _r), p in procs.items():
                if e == expert and p.is_alive():
                    p.terminate()

        try:
            while True:
                try:
                    msg = messages.get(timeout=0.2)
                except queue_module.Empty:
                    msg = None
                except KeyboardInterrupt:
                    if interrupted:  # a second Ctrl-C: don't wait
                        raise
                    interrupted = True
                    stop.set()  # each worker stops after its current step, state saved
                    deadline = time.monotonic() + STOP_GRACE_S
                    continue
                if msg is not None:
                    kind, expert, rank, payload = msg
                    if kind == "step" and on_step is not None:
                        on_step(payload)
                    elif kind == "log":  # the worker's plan, CUDA graph and warning lines
                        level, text = payload
                        log.log(level, "[%s, %s] %s", expert, devices[expert][rank], text)
                    elif kind == "done":
                        reported.add((expert, rank))
                        if rank == 0:
                            results[expert] = payload
                    elif kind == "stopped":
                        reported.add((expert, rank))
                        stopped.add(expert)
                    elif kind == "error":
                        reported.add((expert, rank))
                        fail(expert, *payload)
                    continue  # drain the pipes before looking at the processes
                now = time.monotonic()
                for key, p in procs.items():
                    # died without a word (killed, out of memory)? its message gets 2 s
                    if (
                        p.exitcode not in (None, 0)
                        and key not in reported
                        and now - dead_since.setdefault(key, now) > 2.0
                    ):
                        reported.add(key)
                        fail(
                            key[0],
                            f"{key[0]}: worker process {key[1]} died (exit code {p.exitcode})",
                            "see the messages above; run the same command again to resume",
                        )
                if not any(p.is_alive() for p in procs.values()):
                    break
                if deadline is not None and now > deadline:
                    for p in procs.values():
                        if p.is_alive():
                            p.terminate()
        finally:
            for p in procs.values():
                if p.is_alive():
                    p.terminate()
                p.join(timeout=30)
    if interrupted:
        raise KeyboardInterrupt
    if failure is not None:
        others = [j.expert for j in jobs if j.expert in stopped and j.expert != failure.expert]
        note = f"; {', '.join(others)} stopped with its state saved" if others else ""
        raise WanloraError(
            failure.what
            if failure.what.startswith(failure.expert)
            else f"{failure.expert}: {failure.what}",
            (failure.fix or "fix the problem") + note,
        )
    return results


class _Inbox:
    """The parent's end of one pipe per worker. A pipe send is synchronous (multiprocessing's
    Queue hands messages to a feeder thread, which was seen keeping a finished worker from
    exiting under load), so a worker that has reported can always exit."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.readers: list = []
        self._writer = None

    def new_pipe(self):
        reader, self._writer = self.ctx.Pipe(duplex=False)
        self.readers.append(reader)
        return self._writer

    def close_writer(self) -> None:
        self._writer.close()  # so the reader sees EOF once the worker is gone

    def get(self, timeout: float):
        for reader in multiprocessing.connection.wait(self.readers, timeout):
            try:
                return reader.recv()
            except (EOFError, OSError):  # that worker has exited
                self.readers.remove(reader)
        raise queue_module.Empty


class _LogToParent(logging.Handler):
    """In a worker: wanlora's log records go to the parent, which shows them (a spawned
    process has no logging set up, and its INFO lines would be lost)."""

    def __init__(self, outbox: _Outbox, expert: str, rank: int):
        super().__init__(logging.INFO)
        self.outbox, self.expert, self.rank = outbox, expert, rank

    def emit(self, record: logging.LogRecord) -> None:
        message = ("log", self.expert, self.rank, (record.levelno, record.getMessage()))
        with contextlib.suppress(OSError, ValueError):  # the parent is gone: nobody to tell
            self.outbox.put(message)


class _Outbox:
    """A worker's end: `put` sends at once."""

    def __init__(self, writer):
        self.writer = writer

    def put(self, message) -> None:
        self.writer.send(message)

    def close(self) -> None:
        self.writer.close()


@dataclass
class _WorkerSpec:
    root: Path
    job: Job
    rank: int
    store_path: Path
    overwrite: bool
    restart: bool
    threads: int
    monitor: bool  # rank 0 runs a TrainingMonitor at epoch ends (samples, memory numbers)
    max_vram_gb: float | None = None  # `wanlora train --max-vram`: not in wanlora.toml


@contextlib.contextmanager
def _epoch_monitor(project: Project, device: torch.device, on: bool):
    """The on_epoch_end callback of a worker: a TrainingMonitor when `on`, else None. The
    other ranks of a data-parallel group wait at the next all_reduce while rank 0 samples."""
    if not on:
        yield None
        return
    from ..sampling.training import TrainingMonitor

    monitor = TrainingMonitor(project, device)
    try:
        yield monitor
    finally:
        monitor.close()


def _worker(spec: _WorkerSpec, messages, stop) -> None:
    """One training process: train its expert (or its rank's share) and report back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into `stop`
    os.environ.update(WORKER_ENV)
    expert, rank = spec.job.expert, spec.rank
    device = torch.device(spec.job.devices[rank])
    dp: DataParallel | None = None
    if rank == 0:  # one rank's lines are enough: the others run the same plan
        package_log = logging.getLogger("wanlora")
        package_log.addHandler(_LogToParent(messages, expert, rank))
        package_log.setLevel(logging.INFO)
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # the cores are shared out: a GPU worker's CPU work (noise, timesteps) is small, but
        # each process's default of every core oversubscribes the machine
        torch.set_num_threads(spec.threads)
        project = load_project(spec.root)
        if spec.max_vram_gb is not None:
            project.config.training.max_vram_gb = spec.max_vram_gb
        if len(spec.job.devices) > 1:
            dp = DataParallel.init(
                rank,
                len(spec.job.devices),
                device,
                store_path=spec.store_path,
                stop_check=stop.is_set,
            )

        def on_step(report: StepReport) -> None:
            if rank == 0:
                messages.put(("step", expert, rank, report))
            if dp.stop_requested if dp is not None else stop.is_set():
                raise StopTraining

        with _epoch_monitor(project, device, spec.monitor and rank == 0) as on_epoch_end:
            result = train_expert(
                project,
                expert,
                device=device,
                overwrite=spec.overwrite,
                restart=spec.restart,
                on_step=on_step,
                on_epoch_end=on_epoch_end,
                data_parallel=dp,
            )
        if dp is not None:
            dp.barrier()  # rank 0 has written the files
        messages.put(("done", expert, rank, result))
    except StopTraining:
        messages.put(("stopped", expert, rank, None))
    except WanloraError as exc:
        messages.put(("error", expert, rank, (exc.what, exc.fix)))
        sys.exit(1)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        import traceback

        traceback.print_exc()
        messages.put(
            (
                "error",
                expert,
                rank,
                (
                    f"unexpected {type(exc).__name__} in worker {rank}: {exc}",
                    "the traceback is above; this may be a bug in wanlora; "
                    "run the same command again to resume",
                ),
            )
        )
        sys.exit(1)
    finally:
        if dp is not None:
            dp.close()
        messages.close()


# --- a launch the user makes: torchrun / accelerate launch -----------------------------------


def main(argv: list[str] | None = None) -> int:
    """`torchrun --nproc-per-node N -m wanlora.train.distributed DIR [--expert high]`."""
    parser = argparse.ArgumentParser(
        prog="python -m wanlora.train.distributed",
        description="Train a project's experts data-parallel over the launcher's processes.",
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--expert", "-e", action="append", help="only this expert (repeatable)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--restart", action="store_true")
    args = parser.parse_args(argv)
    os.environ.update(WORKER_ENV)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dp = DataParallel.init(rank, world, device) if world > 1 else None
    try:
        project = load_project(args.directory)
        experts = args.expert or list(project.config.experts)
        if rank == 0:  # lint and cache once, before the others read the cache
            from ..cache.build import build_cache
            from ..dataset.lint import check_dataset

            report = check_dataset(project)
            if report.errors:
                raise WanloraError(
                    f"{report.errors[0].path}: {report.errors[0].message}",
                    f"run `wanlora check {project.root}` for the full list",
                )
            build_cache(project, device=device)
        if dp is not None:
            dp.barrier()
        for expert in experts:
            with _epoch_monitor(project, device, rank == 0) as on_epoch_end:
                result = train_expert(
                    project,
                    expert,
                    device=device,
                    overwrite=args.overwrite,
                    restart=args.restart,
                    on_step=_print_step if rank == 0 else None,
                    on_epoch_end=on_epoch_end,
                    data_parallel=dp,
                )
            free_device_memory(device)  # before the next expert plans its memory
            if dp is not None:
                dp.barrier()
            if rank == 0:
                print(f"{expert}: {result.steps} steps -> {result.lora_path}", flush=True)
        return 0
    except WanloraError as exc:
        print(f"error (rank {rank}): {exc.one_line()}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dp is not None:
            dp.close()


_last_print = [0.0]


def _print_step(report: StepReport) -> None:
    now = time.monotonic()
    if now - _last_print[0] >= 10 or report.step in (1, report.total_steps):
        _last_print[0] = now
        print(
            f"{report.expert} {report.step}/{report.total_steps} loss {report.loss:.4f} "
            f"lr {report.lr:.2e} {report.seconds:.2f} s/step",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
