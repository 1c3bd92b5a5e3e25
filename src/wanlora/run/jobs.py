"""Which processes train what, on which device: the experts side by side and/or data-parallel.

Two ways to spread `wanlora train` over devices (docs/multi_gpu.md), which combine (4 GPUs:
each expert data-parallel over 2):

- expert-parallel: the high- and low-noise experts train at the same time, one process per
  expert, each on its own device. They share nothing but the cache (built once, in the
  parent, before the workers start) and need no process group.
- data-parallel over N processes: one expert's run is exactly the single-process run with
  N times the accumulation (wanlora.train.data_parallel).

`plan_jobs` turns the experts, the devices and the flags into waves of jobs; workers.py runs
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import WanloraError


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
