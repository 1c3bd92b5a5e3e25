"""SIGINT / SIGTERM with worker processes (expert-parallel `--devices cpu,cpu`, data-parallel
2 on the CPU) and through the real CLI: the parent forwards the signal, every worker stops
at a step with its state saved (data-parallel ranks at the same step, rank 0 saving), the
parent raises one Interrupted (the CLI: one message, exit 130 / 143), and the resumed run
gives the uninterrupted run's LoRAs bit for bit. A second signal aborts at once.

Worker runs and CLI runs cost a process start each (torch imported again), so most cases
are one interrupted run there and the resume in this process (the states are the same
files either way); one CLI case resumes with the same command.
"""

from __future__ import annotations

import signal

import pytest

from cli_run import run_cli
from signal_runs import (
    CPU,
    STEPS,
    FaultRule,
    assert_same_loras,
    fresh_copy,
    loras,
    one_torch_thread,
    set_toml,
)
from wanlora import faults
from wanlora.recipes import load_project
from wanlora.run.experts import run_expert
from wanlora.run.signals import Interrupted
from wanlora.run.training import run_training
from wanlora.train.state import latest_state_dir, read_state_meta

CPU2 = ["cpu", "cpu"]
BOTH = ["high", "low"]
ONE = {"OMP_NUM_THREADS": "1"}  # one torch thread, as the reference (the bits depend on it)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():  # as each worker on a 2-core box: the same bits everywhere
        yield


def check_stopped(exc: Interrupted, project) -> None:
    """Each state the stop names is on disk, complete, at its step, not finished."""
    for saved in exc.stopped:
        assert saved.state_dir == latest_state_dir(project.output_dir, saved.expert)
        meta = read_state_meta(saved.state_dir)
        assert (meta.step, meta.finished) == (saved.step, False)


def test_expert_parallel_a_signal_to_one_worker_stops_both(signal_reference, tmp_path):
    """SIGTERM reaches the low-noise worker alone (`kill` of its pid): it stops after its
    step 2 with the state saved; the parent stops the high-noise worker at its next step."""
    root = fresh_copy(signal_reference, tmp_path / "run")
    with FaultRule("step[low]:2:sigterm"), pytest.raises(Interrupted) as stopped:
        run_training(load_project(root), devices=CPU2)
    exc = stopped.value
    assert exc.signum == signal.SIGTERM and exc.exit_code == 143
    low = [s for s in exc.stopped if s.expert == "low"]
    assert [s.step for s in low] == [2]
    check_stopped(exc, load_project(root))
    results = run_training(load_project(root), device=CPU)  # the states resume anywhere
    assert [r.steps for r in results] == [STEPS, STEPS]
    assert_same_loras(loras(signal_reference, BOTH), loras(root, BOTH))


def data_parallel_copy(reference, dest):
    """Data-parallel 2 with accumulation 1 computes the reference's accumulation 2."""
    root = fresh_copy(reference, dest)
    set_toml(root, training=dict(gradient_accumulation_steps=1))
    return root


def test_data_parallel_ranks_stop_at_the_same_step(signal_reference, tmp_path):
    """SIGTERM to rank 1 alone after step 1: its wish travels in step 2's all_reduce, both
    ranks stop after step 2, rank 0 saves once. (A signal to the parent is forwarded to
    every worker: test_the_cli_with_workers_prints_one_message.)"""
    root = data_parallel_copy(signal_reference, tmp_path / "dp")
    with FaultRule("worker_step[*/1]:1:sigterm"), pytest.raises(Interrupted) as stopped:
        run_training(load_project(root), experts=["high"], devices=CPU2, data_parallel=2)
    exc = stopped.value
    assert exc.signum == signal.SIGTERM
    (saved,) = exc.stopped  # rank 0 saved once, for both ranks
    assert (saved.expert, saved.step) == ("high", 2)
    check_stopped(exc, load_project(root))
    # resumed in one process with the accumulation the two ranks computed (the same maths;
    # `wanlora train` would call the changed setting an edit, so the engine is called directly)
    set_toml(root, training=dict(gradient_accumulation_steps=2))
    run_expert(load_project(root), "high", device=CPU)
    assert_same_loras(loras(signal_reference, ["high"]), loras(root, ["high"]))


def test_a_signal_while_the_parent_builds_the_cache_stops_at_once(signal_reference, tmp_path):
    root = fresh_copy(signal_reference, tmp_path / "run", cache=False)
    with FaultRule("cache_write:2:sigterm"), pytest.raises(Interrupted) as stopped:
        run_training(load_project(root), devices=CPU2)
    assert stopped.value.stopped == () and stopped.value.kept == ()
    assert "nothing to save" in stopped.value.message()
    assert not (root / "output" / "state").exists()  # no worker was started
    run_training(load_project(root), experts=["high"], device=CPU)
    assert_same_loras(loras(signal_reference, ["high"]), loras(root, ["high"]))


# --- the CLI ---------------------------------------------------------------------------------


def test_the_cli_says_what_was_saved_and_exits_143_on_sigterm(signal_reference, tmp_path):
    root = fresh_copy(signal_reference, tmp_path / "cli")
    r = run_cli("train", str(root), "--expert", "high", env={**ONE, faults.ENV: "step:3:sigterm"})
    assert r.returncode == 143, r.stderr
    state = latest_state_dir(load_project(root).output_dir, "high")
    lines = [line for line in r.stderr.splitlines() if not line.startswith(("INFO", "WARNING"))]
    assert lines[-2:] == [
        f"interrupted (SIGTERM): high stopped after step 3, its state is saved in {state}",
        f"resume with: wanlora train {root} --expert high",
    ]
    assert "interrupted (SIGTERM)" in r.stderr
    assert "high stopped after step 3" in r.stderr
    assert f"resume with: wanlora train {root}" in r.stderr
    r = run_cli("train", str(root), "--expert", "high", env=ONE)
    assert r.returncode == 0, r.stderr
    assert_same_loras(loras(signal_reference, ["high"]), loras(root, ["high"]))


def test_a_second_ctrl_c_aborts_at_once_and_the_last_state_resumes(signal_reference, tmp_path):
    """Ctrl-C during high's step 4 (after the periodic state at step 3), again before the
    step ends: nothing more is written, the step-3 state resumes."""
    root = fresh_copy(signal_reference, tmp_path / "cli")
    rule = "micro_batch:7:sigint,micro_batch:8:sigint"
    r = run_cli("train", str(root), "--expert", "high", env={**ONE, faults.ENV: rule})
    assert r.returncode == 130, r.stderr
    state = latest_state_dir(load_project(root).output_dir, "high")
    assert state.name == "step-00000003"
    assert (
        "interrupted (SIGINT): stopped at once (second signal); the last saved state resumes: "
        f"high at step 3 in {state}; the cache entries written so far are kept"
    ) in r.stderr
    assert "Traceback" not in r.stderr
    assert not list(state.parent.glob(".tmp-*"))
    run_training(load_project(root), experts=["high"], device=CPU)  # resumes from step 3
    assert_same_loras(loras(signal_reference, ["high"]), loras(root, ["high"]))


def test_the_cli_with_workers_prints_one_message(signal_reference, tmp_path):
    """SIGTERM to the parent of `--devices cpu,cpu`: forwarded, both workers stop at a step
    with their states saved, one message names both, exit 143."""
    root = fresh_copy(signal_reference, tmp_path / "cli")
    r = run_cli("train", str(root), "--devices", "cpu,cpu", env={**ONE, faults.ENV: "parent_step:2:sigterm"})
    assert r.returncode == 143, r.stderr
    (message,) = [line for line in r.stderr.splitlines() if line.startswith("interrupted")]
    assert message.startswith("interrupted (SIGTERM): ")
    project = load_project(root)
    for expert in BOTH:
        state = latest_state_dir(project.output_dir, expert)
        if state is not None and not read_state_meta(state).finished:
            step = read_state_meta(state).step
            assert f"{expert} stopped after step {step}, its state is saved in {state}" in message
    assert r.stderr.splitlines()[-1] == f"resume with: wanlora train {root} --devices cpu,cpu"
    run_training(load_project(root), device=CPU)  # resumes (the same files as the workers')
    assert_same_loras(loras(signal_reference, BOTH), loras(root, BOTH))
