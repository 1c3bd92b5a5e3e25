"""Shared fixtures. Tests run on CPU with tiny random models; nothing is downloaded."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch (OpenMP) thread in the test processes and the CLI processes they start, set
# before torch is imported: the tiny models gain nothing from more, and `pytest -n 2` on a
# 2-core CI machine with each process's default of every core runs 4 spinning threads on 2
# cores, which made whole training tests several times slower (measured: 4x the CPU time).
# The spawned training workers set their own share (wanlora.run.workers).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated_models_dir(tmp_path_factory, monkeypatch):
    """Never touch the user's real ~/.cache/wanlora from a test."""
    monkeypatch.setenv("WANLORA_MODELS_DIR", str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    """A warm `wanlora` CLI process for a test module (tests/test_reliability_zygote.py)."""
    from test_reliability_zygote import Zygote

    z = Zygote(tmp_path_factory.mktemp("zygote-logs"))
    yield z
    z.close()


@pytest.fixture(scope="session")
def signal_reference(tmp_path_factory):
    """The signal tests' uninterrupted run (tests/signal_runs.py), made once per session."""
    from signal_runs import reference_project

    return reference_project(tmp_path_factory.mktemp("signals") / "reference")


def pytest_configure(config):
    """Under `pytest -n 2` each test file runs on one worker (xdist's loadfile, unless
    --dist is given): the default spreads a file's tests over both workers near the end of
    the run, and each worker then builds that file's module fixtures (trained projects,
    caches) again."""
    given = any(
        arg == "--dist" or arg.startswith("--dist=") for arg in config.invocation_params.args
    )
    if getattr(config.option, "dist", "no") == "load" and not given:
        config.option.dist = "loadfile"
