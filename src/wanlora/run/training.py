"""`wanlora train` as a library call: one training run, assembled.

    run_training
      project lock (lock.py), leftovers of a killed run removed
      checks.py: the dataset lints clean
      plan.py: the project compared with its last run: a new run, the same one going on,
        nothing to do, or a refusal; kept.py: the previous run kept, this run's record
      checks.py: the model files are sound (headers only)
      jobs.py: one process, or workers for the experts side by side / data-parallel
        signals.stop_on_signals around either (SIGINT/SIGTERM: save at the step, Interrupted)
        one process:  one_process.train_in_this_process -> experts.run_expert per expert
        workers:      workers.run_parallel -> experts.run_expert in each worker
      validation.write_verdict: does each LoRA move the model (output/verdict.json)
    describe_lora: a LoRA file in two lines, for the CLI and the demo

The run layer builds what the engine (wanlora.train) is handed: the prepared data, the
parallel strategy and the callbacks (progress, loss log, epoch-end samples from
wanlora.sampling). Training and sampling never import each other; this layer imports both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import WanloraError
from ..lora.file import read_lora_file
from ..lora.keys import down_keys
from ..recipes import Project
from ..sampling.epoch_samples import TrainingMonitor
from ..train.callbacks import EpochCallback, ExpertResult, StepCallback
from .checks import check_dataset_clean, check_model_files
from .jobs import plan_jobs
from .kept import recorded
from .lock import project_lock, remove_leftovers
from .one_process import train_in_this_process, with_kept_states
from .plan import Plan, make_plan
from .signals import Interrupted, StopRequest, stop_on_signals
from .validation import write_verdict
from .workers import run_parallel


def run_training(
    project: Project,
    *,
    experts: list[str] | None = None,
    device: torch.device | None = None,
    new_run: bool = False,
    overwrite: bool = False,
    restart: bool = False,
    on_plan: Callable[[Plan], None] | None = None,
    on_step: StepCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
    devices: list[str] | None = None,
    parallel_experts: bool | None = None,
    data_parallel: int = 1,
) -> list[ExpertResult]:
    """Refuse a dataset with errors before any model is loaded, then train (holding the
    project's lock: a second `wanlora train` on it refuses, naming this one's pid).

    What is trained follows the plan (plan.py): the project compared with its last run,
    handed to `on_plan` before any work; `new_run` starts a new run whatever changed
    (`overwrite` and `restart` are its earlier spellings). The run's record (kept.py) ends
    finished, interrupted or failed; the results include the experts already trained.

    Several devices (`devices`, default: every visible GPU unless `device` is given): the
    experts train side by side and/or data-parallel, in worker processes (workers.py)."""
    # SIGINT / SIGTERM from here on: signals.py says what happens in each phase
    with stop_on_signals() as stop, project_lock(project.root, "train"):
        try:
            remove_leftovers(project.root, project.output_dir, project.cache_dir)
            check_dataset_clean(project)
            # --- the run: what changed since the last one, and what that redoes ------------
            plan = make_plan(project, experts, new_run=new_run or overwrite or restart)
            if on_plan is not None:
                on_plan(plan)
            if plan.action == "refuse":
                raise plan.refusal(project)
            if not plan.train:
                return plan.skipped_results()
            fresh = plan.action in ("first", "new")
            # sound model files before the run is recorded: a bad file writes nothing
            check_model_files(project, plan.train, overwrite=fresh, restart=False)
            with recorded(project, plan) as results:
                results += _train_experts(
                    project,
                    stop,
                    plan.train,
                    fresh=fresh,
                    device=device,
                    on_step=on_step,
                    on_epoch_end=on_epoch_end,
                    devices=devices,
                    parallel_experts=parallel_experts,
                    data_parallel=data_parallel,
                )
                write_verdict(project)  # each expert's, from its validation log
            return plan.skipped_results() + results
        except Interrupted as exc:
            raise with_kept_states(exc, project) from None


def _train_experts(
    project: Project,
    stop: StopRequest,
    experts: list[str],
    *,
    fresh: bool,
    device: torch.device | None,
    on_step: StepCallback | None,
    on_epoch_end: EpochCallback | None,
    devices: list[str] | None,
    parallel_experts: bool | None,
    data_parallel: int,
) -> list[ExpertResult]:
    """The plan's experts, in this process or in workers. `fresh`: a new run, whose earlier
    LoRAs at output/ are kept in output/runs/<N>/ and may be replaced."""
    overwrite, restart = fresh, False
    waves = plan_jobs(
        experts,
        devices or ([str(device)] if device is not None else None),
        data_parallel=data_parallel,
        parallel_experts=parallel_experts,
    )
    if waves is None:
        return train_in_this_process(
            project,
            experts,
            stop,
            device=device or (torch.device(devices[0]) if devices else None),
            overwrite=overwrite,
            restart=restart,
            on_step=on_step,
            on_epoch_end=on_epoch_end,
        )
    # worker processes: the callback cannot travel, but a TrainingMonitor's work can (each
    # worker runs its own); any other on_epoch_end would be silently skipped
    monitor = isinstance(on_epoch_end, TrainingMonitor)
    if on_epoch_end is not None and not monitor:
        raise WanloraError(
            "an on_epoch_end callback cannot run in worker processes",
            "train on one device (devices=[...] with one entry), or leave on_epoch_end out",
        )
    return run_parallel(
        project,
        waves,
        overwrite=overwrite,
        restart=restart,
        on_step=on_step,
        monitor=monitor,
        stop=stop,
    )


def describe_lora(path: Path) -> str:
    """A short human summary of a LoRA file: modules, rank, dtype, title."""
    tensors, metadata = read_lora_file(path)
    downs = down_keys(tensors)
    rank = tensors[downs[0]].shape[0] if downs else 0
    dtype = str(tensors[downs[0]].dtype).replace("torch.", "") if downs else "?"
    return (
        f"  {path}\n"
        f"    {len(downs)} LoRA modules (rank {rank}, {dtype}), title {metadata.get('modelspec.title')!r}, "
        f"timesteps {metadata.get('wanlora.timestep_range')}, {metadata.get('ss_steps')} steps"
    )
