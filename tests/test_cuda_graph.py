"""wanlora.train.speed.cuda_graph on the CPU: the warm-up's effect is undone exactly, and the
conditions under which a step may be one graph. (Capture and replay need a GPU: measured in
benchmarks/bench_step.py, `*-graph` variants.)"""

from __future__ import annotations

import pytest
import torch

from wanlora.recipes import load_recipe
from wanlora.train.speed.cuda_graph import GraphedStep, why_not_graphed


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    data = torch.randn(32, 8), torch.randn(32, 1)

    def loss_fn(x, y):
        return torch.nn.functional.mse_loss(model(x), y)

    return model, params, optimizer, scaler, data, loss_fn


def _plain_steps(n, prior_steps=0):
    """n optimiser steps the ordinary way (after prior_steps), for comparison."""
    model, params, optimizer, _scaler, data, loss_fn = _setup()
    for _ in range(prior_steps + n):
        optimizer.zero_grad()
        loss_fn(*data).backward()
        optimizer.step()
    return [p.detach().clone() for p in params]


def test_warm_up_steps_are_undone_in_place():
    for prior in (0, 2):  # a fresh optimiser, and one with state (a resumed run)
        model, params, optimizer, scaler, data, loss_fn = _setup()
        for _ in range(prior):
            optimizer.zero_grad()
            loss_fn(*data).backward()
            optimizer.step()
        graphed = GraphedStep(loss_fn, params, optimizer, scaler)
        addresses = [p.data_ptr() for p in params]
        saved = graphed._snapshot()
        for _ in range(3):  # what _capture's warm-up does
            graphed._body(data)
        graphed._restore(saved)
        assert [p.data_ptr() for p in params] == addresses  # restored in place
        graphed._body(data)  # the first real step
        expected = _plain_steps(1, prior_steps=prior)
        assert all(torch.equal(a, b) for a, b in zip(params, expected, strict=True))


def test_when_a_step_can_be_one_graph():
    training = load_recipe("wan22-t2v").training
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # labels only
    assert why_not_graphed(training, 0.0, cuda, recomputed=0, ranks=1) is None
    assert why_not_graphed(training, 0.0, cpu, 0, 1) == "not on a GPU"
    assert "recompute" in why_not_graphed(training, 0.0, cuda, 36, 1)
    assert why_not_graphed(training, 1.0, cuda, 0, 1) == "gradient clipping"
    assert why_not_graphed(training, 0.0, cuda, 0, 2) == "several processes share the step"
    accum = training.model_copy(update={"gradient_accumulation_steps": 2})
    assert why_not_graphed(accum, 0.0, cuda, 0, 1) == "gradient accumulation"
    off = training.model_copy(update={"cuda_graph": "off"})
    assert why_not_graphed(off, 0.0, cuda, 0, 1) == "training.cuda_graph = off"


def test_a_failed_capture_falls_back_to_plain_steps_with_a_warning(caplog):
    # on this CPU-only machine capturing fails (no CUDA): the fallback path, for real
    model, params, optimizer, scaler, data, loss_fn = _setup()
    graphed = GraphedStep(loss_fn, params, optimizer, scaler)
    with caplog.at_level("WARNING"):
        losses = [graphed(*data).item() for _ in range(2)]
    assert graphed.failed and not graphed.graphs
    assert "CUDA graph capture failed" in caplog.text and "cuda_graph" in caplog.text
    expected = _plain_steps(2)  # nothing of the failed attempt is left
    assert all(torch.equal(a, b) for a, b in zip(params, expected, strict=True))
    assert losses[1] < losses[0]


def test_optimizer_groups_switch_between_graphed_and_plain_runs():
    from wanlora.train.speed.cuda_graph import set_capturable

    _model, params, optimizer, *_ = _setup()
    cpu = torch.device("cpu")
    set_capturable(optimizer, cpu, on=True)
    group = optimizer.param_groups[0]
    assert group["capturable"] and isinstance(group["lr"], torch.Tensor)
    saved = optimizer.state_dict()  # what a graphed run's resume state holds
    fresh = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    fresh.load_state_dict(saved)
    set_capturable(fresh, cpu, on=False)  # resumed without graphs
    group = fresh.param_groups[0]
    assert group["capturable"] is False and group["lr"] == pytest.approx(1e-2)
    assert isinstance(group["lr"], float)
