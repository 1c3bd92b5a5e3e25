"""Fault injection for the reliability tests (tests/test_reliability_*.py); inert by default.

The library calls `point(name)` at a few places where a crash or a full disk would hurt most.
Unless the environment variable WANLORA_FAULT_AT is set, a call is one dict lookup and does
nothing. WANLORA_FAULT_AT holds comma-separated rules `NAME[GLOB]:N[:ACTION]`:

    NAME    the point (the path it passes in brackets):
              cache_write   after a cache entry is written (cache/build.py) [the entry]
              model_load    a DiT loaded and prepared for training (train/setup.py)
                            [the expert]
              micro_batch   after a micro-batch's forward and backward, before the step it
                            belongs to (train/loop.py; with gradient accumulation, the
                            micro-batches inside an accumulation) [the expert]
              step          after an optimiser step (train/loop.py) [the expert]
              epoch_end     an epoch done, before its epoch-end callback (train/loop.py)
                            [the expert]
              sample        epoch-end sampling, before the images render
                            (sampling/epoch_samples.py) [the expert]
              state_save    a state save begins, nothing written yet (train/state.py)
                            [the state folder]
              state_write   a state folder half written: the LoRA and trainer files there,
                            meta.json not yet (train/state.py) [the temporary folder]
              atomic_write  a temporary file fully written, not yet renamed over its
                            target (fsutil.py) [the target]
              worker_step   in a worker process, after a step's report to the parent
                            (run/workers.py) [<expert>/<rank>]
              parent_step   in the parent of worker processes, a worker's step report
                            received (run/workers.py) [<expert>/<rank>]
    GLOB    optional fnmatch pattern on the path passed with the point, e.g.
            atomic_write[*Noise*]:1 hits the first LoRA file written, not cache entries,
            step[low]:2 the low-noise expert's second step, worker_step[*/1]:1 the first
            step of every rank-1 worker
    N       act at the N-th matching call in this process (1-based)
    ACTION  kill (default: SIGKILL this process, like a preempted machine), enospc (raise
            OSError(ENOSPC), like a full disk), oom (raise torch.OutOfMemoryError, like a
            GPU that another program fills), sigint (send this process SIGINT, like Ctrl-C)
            or sigterm (send it SIGTERM, like a scheduler's stop or `kill`)

sigint and sigterm are delivered to this process and `point` returns: what happens next is
up to the process's signal handlers (Python's default for SIGINT raises KeyboardInterrupt at
the next bytecode; the default for SIGTERM ends the process), as with a signal from outside.

Example: WANLORA_FAULT_AT="state_write:2" kills `wanlora train` half-way through its second
state save. Counters are per process, so a resumed run counts from zero again, and worker
processes (which inherit the variable) count their own points.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import signal

ENV = "WANLORA_FAULT_AT"
_ACTIONS = ("kill", "enospc", "oom", "sigint", "sigterm")
_RULE = re.compile(rf"(\w+)(?:\[([^\]]+)\])?:(\d+)(?::({'|'.join(_ACTIONS)}))?")
_SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}
_counts: dict[int, int] = {}
_rules: list[tuple[str, str | None, int, str]] | None = None


def _parse(spec: str) -> list[tuple[str, str | None, int, str]]:
    rules = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = _RULE.fullmatch(part)
        if m is None:
            raise ValueError(
                f"{ENV}: bad rule {part!r} (expected NAME[GLOB]:N[:{'|'.join(_ACTIONS)}])"
            )
        rules.append((m[1], m[2], int(m[3]), m[4] or "kill"))
    return rules


def point(name: str, path: os.PathLike | str | None = None) -> None:
    """A named fault point; acts only when a WANLORA_FAULT_AT rule matches."""
    global _rules
    if _rules is None:
        spec = os.environ.get(ENV, "")
        if not spec:
            return
        _rules = _parse(spec)
    due = []  # every matching rule counts this call, even when an earlier one acts
    for i, (rule_name, glob, n, action) in enumerate(_rules):
        if rule_name != name or (glob and not fnmatch.fnmatch(str(path or ""), glob)):
            continue
        _counts[i] = _counts.get(i, 0) + 1
        if _counts[i] == n:
            due.append((action, n))
    if not due:
        return
    action, n = due[0]
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path or ""))
    if action == "oom":
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory ({ENV}: {name}:{n}:oom)")
    if action in _SIGNALS:
        os.kill(os.getpid(), _SIGNALS[action])
        return
    os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget parsed rules and counters (for tests that change WANLORA_FAULT_AT in-process)."""
    global _rules
    _rules = None
    _counts.clear()
