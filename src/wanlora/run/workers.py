"""Worker processes: each wave's jobs in their own processes, progress relayed, failures shared.

The parent (`run_parallel`, called by training.run_training) builds the cache once, then
spawns one process per (job, rank) with multiprocessing's spawn; a FileStore in a temporary
folder rendezvouses each data-parallel group (NCCL on GPUs, gloo on CPU). Each worker builds
its strategy (wanlora.train.data_parallel.DataParallel over its group's ranks, else
SingleProcess) and its callbacks, and runs experts.run_expert, the same function a
one-process run calls. Workers send StepReports, log lines and their result to the parent
over one pipe each (pipes.py). A failure in one worker stops the others at their next step
with their state saved.

Signals (signals.py): SIGINT or SIGTERM in the parent while it builds the cache stops at
once. Once the workers run, the parent forwards the signal to every worker; a worker stops
at its next step with its state saved (data-parallel ranks agree on the step in the step's
all_reduce, so they stop together and rank 0 saves), or at once if it has not stepped yet,
and reports its state; the parent then raises one Interrupted naming every saved state. A
signal that reaches one worker alone (`kill` of its pid) stops the whole run the same way.
A second signal to the parent kills the workers (SIGKILL: every write is atomic).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue as queue_module
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import faults
from ..cache.build import build_cache
from ..dataset.items import load_items
from ..errors import WanloraError
from ..recipes import Project, load_project
from ..train.callbacks import ExpertResult, StepCallback, StepReport, StopTraining
from ..train.data_parallel import WORKER_ENV, DataParallel
from ..train.state import latest_state_dir
from ..train.strategy import ParallelStrategy, SingleProcess
from .callbacks import epoch_monitor
from .experts import check_experts, run_expert
from .jobs import Job
from .pipes import Inbox, LogToParent, Outbox
from .signals import (
    RELAYING,
    Interrupted,
    Saved,
    StopRequest,
    signals_blocked,
    stop_on_signals,
    unblock_signals,
)

log = logging.getLogger(__name__)

STOP_GRACE_S = 300.0  # after a failure, how long the others get to reach a step and save
RANK_GRACE_S = 5.0  # a stopping job's rank gone: how long its other ranks get (they write nothing)


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
    stop: StopRequest | None = None,
) -> list[ExpertResult]:
    """Build the cache once here, then run each wave's jobs in worker processes.

    `monitor`: each job's rank 0 runs a TrainingMonitor at its epoch ends (memory numbers,
    the [sample] images), as `wanlora train` does in one process. `stop`: the signal
    handlers' request (signals.stop_on_signals), in the `starting` phase while the cache is
    built, then relayed to the workers."""
    stop = stop or StopRequest()
    check_experts(project, [job.expert for wave in waves for job in wave])
    build_cache(project, items=load_items(project), device=torch.device(waves[0][0].devices[0]))
    stop.phase = RELAYING
    results: dict[str, ExpertResult] = {}
    for wave in waves:
        results.update(_run_wave(project, wave, overwrite, restart, on_step, monitor, stop))
    return [results[job.expert] for wave in waves for job in wave]


def _run_wave(
    project, jobs, overwrite, restart, on_step, monitor, request
) -> dict[str, ExpertResult]:
    ctx = multiprocessing.get_context("spawn")
    messages = Inbox(ctx)
    stop = ctx.Event()
    n_procs = sum(len(j.devices) for j in jobs)
    threads = max(1, (os.cpu_count() or 1) // n_procs)
    devices = {job.expert: job.devices for job in jobs}
    results: dict[str, ExpertResult] = {}
    failure: _Failure | None = None
    interrupted = False
    signum: int | None = None  # the signal that stops the run (the parent's or a worker's)
    saved: dict[str, Saved] = {}  # the states the workers saved when they stopped
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
                        render_base=j == 0,
                    )
                    proc = ctx.Process(
                        target=_worker,
                        args=(spec, Outbox(messages.new_pipe()), stop),
                        name=f"wanlora-{job.expert}-{rank}",
                    )
                    with signals_blocked():  # held until the worker's handlers are in
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
        exited_at: dict[tuple[str, int], float] = {}  # while stopping: when each one ended
        stepping: set[str] = set()  # jobs whose rank 0 has reported a step

        def fail(expert: str, what: str, fix: str | None) -> None:
            nonlocal failure, deadline
            if failure is None and not interrupted:
                failure = _Failure(expert, what, fix)
            stop.set()
            deadline = deadline or time.monotonic() + STOP_GRACE_S
            # the failed job's other ranks cannot finish a step without it: end them now
            for (e, _r), p in procs.items():
                if e == expert and p.is_alive():
                    p.kill()

        def interrupt(by: int) -> None:
            """Stop every worker: at its next step with its state saved, or at once."""
            nonlocal interrupted, signum, deadline
            interrupted, signum = True, signum or by
            stop.set()
            deadline = deadline or time.monotonic() + STOP_GRACE_S
            for p in procs.values():
                if p.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, by)

        try:
            while True:
                if request.signum is not None and not interrupted:
                    interrupt(request.signum)  # the parent's signal, forwarded
                try:
                    msg = messages.get(timeout=0.2)
                except queue_module.Empty:
                    msg = None
                if msg is not None:
                    kind, expert, rank, payload = msg
                    if kind == "step":
                        stepping.add(expert)
                        faults.point("parent_step", f"{expert}/{rank}")
                        if on_step is not None:
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
                        by, state = payload
                        if state is not None:
                            saved[expert] = state
                        if by is not None and not interrupted:  # a signal to this worker
                            interrupt(by)
                    elif kind == "error":
                        reported.add((expert, rank))
                        if not interrupted:  # while stopping: a rank that lost its peers
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
                        if interrupted:
                            continue
                        fail(
                            key[0],
                            f"{key[0]}: worker process {key[1]} died (exit code {p.exitcode})",
                            "see the messages above; run the same command again to resume",
                        )
                if not any(p.is_alive() for p in procs.values()):
                    break
                if interrupted:
                    _end_orphaned_ranks(procs, exited_at, stepping, now)
                if deadline is not None and now > deadline:
                    for p in procs.values():
                        if p.is_alive():
                            p.kill()
        finally:
            for p in procs.values():
                if p.is_alive():  # an abort (second signal) or an error here: every write
                    p.kill()  # is atomic, so SIGKILL leaves the last saved states whole
                p.join(timeout=30)
    if interrupted:
        stopped_states = tuple(saved[j.expert] for j in jobs if j.expert in saved)
        raise Interrupted(signum, stopped=stopped_states)
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


def _end_orphaned_ranks(procs, exited_at, stepping, now) -> None:
    """While stopping: a data-parallel rank whose peer has ended may wait in a collective
    or the rendezvous for good. Such ranks write nothing (rank 0 writes, and only once it
    has stepped), so they are killed RANK_GRACE_S after their first peer ended."""
    for key, p in procs.items():
        if not p.is_alive():
            exited_at.setdefault(key, now)
    for (expert, rank), p in procs.items():
        peers = [t for (e, r), t in exited_at.items() if e == expert and r != rank]
        writes = rank == 0 and expert in stepping
        if p.is_alive() and peers and not writes and now - min(peers) > RANK_GRACE_S:
            p.kill()


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
    # the base models' samples (the report grid's top row): one worker of the wave renders
    # them, not every expert's worker at once
    render_base: bool = True


def _worker(spec: _WorkerSpec, messages, stop) -> None:
    """One training process: train its expert (or its rank's share) and report back."""
    with stop_on_signals(second_aborts=False) as request:  # SIGINT/SIGTERM: signals.py
        _work(spec, messages, stop, request)


def _work(spec: _WorkerSpec, messages, stop, request: StopRequest) -> None:
    os.environ.update(WORKER_ENV)
    expert, rank = spec.job.expert, spec.rank
    device = torch.device(spec.job.devices[rank])
    data_parallel = len(spec.job.devices) > 1
    strategy: ParallelStrategy | None = None
    if rank == 0:  # one rank's lines are enough: the others run the same plan
        package_log = logging.getLogger("wanlora")
        package_log.addHandler(LogToParent(messages, expert, rank))
        package_log.setLevel(logging.INFO)

    def stop_wish() -> bool:  # another worker failed, or a signal reached this one
        return stop.is_set() or request.signum is not None

    try:
        unblock_signals()  # the handlers are in: a signal that came during start-up acts now
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # the cores are shared out: a GPU worker's CPU work (noise, timesteps) is small, but
        # each process's default of every core oversubscribes the machine
        torch.set_num_threads(spec.threads)
        project = load_project(spec.root)
        if spec.max_vram_gb is not None:
            project.config.training.max_vram_gb = spec.max_vram_gb
        if data_parallel:
            strategy = DataParallel.init(
                rank,
                len(spec.job.devices),
                device,
                store_path=spec.store_path,
                stop_check=stop_wish,
            )
        else:  # another job's failure stops this one at its next step
            strategy = SingleProcess(stop_check=stop_wish)

        def on_step(report: StepReport) -> None:
            if rank == 0:
                messages.put(("step", expert, rank, report))
            faults.point("worker_step", f"{expert}/{rank}")  # test hook (faults.py)
            if strategy.should_stop():  # data-parallel: the ranks agreed at the step
                raise StopTraining

        with epoch_monitor(
            project, device, spec.monitor and rank == 0, render_base=spec.render_base
        ) as on_epoch_end:
            result = run_expert(
                project,
                expert,
                device=device,
                overwrite=spec.overwrite,
                restart=spec.restart,
                # data-parallel ranks stop where they agreed: the strategy decides
                on_step=request.step_callback(on_step, stops=not data_parallel),
                on_epoch_end=request.epoch_callback(on_epoch_end, stops=not data_parallel),
                strategy=strategy,
            )
        strategy.barrier()  # rank 0 has written the files
        messages.put(("done", expert, rank, result))
    except (StopTraining, Interrupted):  # at a step (state saved), or before the first one
        state = None
        if request.last is not None and strategy is not None and strategy.writes_files:
            state_dir = latest_state_dir(project.output_dir, expert)
            state = Saved(expert, request.last.step, state_dir) if state_dir else None
        messages.put(("stopped", expert, rank, (request.signum, state)))
    except WanloraError as exc:
        messages.put(("error", expert, rank, (exc.what, exc.fix)))
        sys.exit(1)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        if request.signum is not None:  # stopping: a collective whose peer has gone
            messages.put(("stopped", expert, rank, (request.signum, None)))
            sys.exit(1)
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
        if strategy is not None:
            strategy.close()
        messages.close()
