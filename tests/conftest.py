"""Shared fixtures. Tests run on CPU with tiny random models; nothing is downloaded."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
