"""A whole training step replayed from a CUDA graph.

Why: a compiled 14B expert step launches thousands of kernels from Python (40 compiled
blocks forward and backward, the LoRA branches, the optimiser). On an H100 the GPU then
waits for the CPU for a noticeable part of each step (measured with the profiler in
benchmarks/bench_step.py: ~350 ms of kernels in a ~400 ms step). Captured once per input
shape, a step becomes: copy the inputs into fixed buffers, replay, read the loss.

What the graph holds: zeroing the gradients, forward, loss, scaled backward, the optimiser
step and the loss-scale update (GradScaler with a fused optimiser needs no host sync).
Capturing needs a few real steps first (warm-up: compilation, cuBLAS/cuDNN plans); their
effect on the LoRA weights, the optimiser state and the loss scale is undone afterwards, so
training continues exactly as if they had not run.

Values: the same kernels as a plain step, except that a capturable AdamW computes its bias
corrections on the GPU in float32 (a plain one in Python floats): LoRAs differ from plain
steps at rounding level (measured on the demo: <= 2e-4 on fp16 LoRA values, while two plain
GPU runs differ by up to 6e-5, cuDNN's attention backward being non-deterministic).
If the model is moved (sampling between epochs may offload it), the graphs are captured
again; if capturing fails, training continues with plain steps and says why.

Limits: one micro-batch per optimiser step (no gradient accumulation), one process, a
fused optimiser made capturable (`set_capturable`: its lr becomes a tensor that the
schedule updates in place).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # the buffers the graph reads
    loss: torch.Tensor  # the buffer the graph writes the loss to
    addresses: tuple[int, ...]  # of the parameters and gradients it was captured with


class GraphedStep:
    """`step(*inputs) -> loss` (a device tensor): one optimiser step, replayed from a graph.

    loss_fn(*inputs) -> scalar loss tensor; `params` are the trained parameters (their
    gradients become fixed buffers); `optimizer` must be fused with a tensor learning rate.
    A graph is captured for each distinct set of input shapes (one per bucket), all sharing
    one memory pool: they never run at the same time.
    """

    def __init__(
        self,
        loss_fn: Callable[..., torch.Tensor],
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        warmup: int = 3,
    ):
        self.loss_fn = loss_fn
        self.params = params
        self.optimizer = optimizer
        self.scaler = scaler
        self.warmup = warmup
        self.graphs: dict[tuple, _Captured] = {}
        self.pool = None
        self.failed: str | None = None  # why capture failed, once it has

    def _addresses(self) -> tuple[int, ...]:
        """Where the parameters and gradients live: a graph is only valid for these."""
        return tuple(0 if t is None else t.data_ptr() for p in self.params for t in (p, p.grad))

    def _body(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.loss_fn(*inputs)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.failed is not None:  # capture failed once: plain steps from then on
            return self._body(inputs)
        key = tuple((tuple(x.shape), x.dtype) for x in inputs)
        captured = self.graphs.get(key)
        if captured is not None and captured.addresses != self._addresses():
            # the model was moved (sampling between epochs can offload it to the CPU and
            # back): its tensors have new addresses, so every graph is captured again
            log.info("the model's tensors moved: capturing the CUDA graphs again")
            self.graphs.clear()
            self.pool = None  # a fresh pool: the freed graphs' pool cannot be captured into
            captured = None
        if captured is None:
            captured = self._capture_or_fall_back(inputs)
            if captured is None:
                return self._body(inputs)
            self.graphs[key] = captured
        for buffer, value in zip(captured.inputs, inputs, strict=True):
            buffer.copy_(value, non_blocking=True)
        captured.graph.replay()
        return captured.loss

    def _capture_or_fall_back(self, inputs: tuple[torch.Tensor, ...]) -> _Captured | None:
        """A capture, or None (logged) when this setup cannot be captured: training goes on
        with plain steps, same values. Out of memory is not a capture problem: raised."""
        saved = self._snapshot()
        try:
            return self._capture(inputs, saved)
        except torch.OutOfMemoryError:
            self._restore(saved)
            raise
        except Exception as exc:  # any capture failure: fall back, say why
            self._restore(saved)
            self.failed = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            log.warning(
                "CUDA graph capture failed (%s); training continues without graphs "
                '(results equal up to rounding; set training.cuda_graph = "off" to skip the attempt)',
                self.failed,
            )
            return None

    def _capture(self, inputs: tuple[torch.Tensor, ...], saved: dict) -> _Captured:
        for param in self.params:  # fixed gradient buffers, zeroed inside the graph
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        static = tuple(x.detach().clone() for x in inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
            for _ in range(self.warmup):
                self._body(static)
        torch.cuda.current_stream().wait_stream(stream)
        self._restore(saved)
        torch.cuda.empty_cache()  # the warm-up's activations: free for the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            loss = self._body(static)
        self.pool = graph.pool()
        return _Captured(graph, static, loss, self._addresses())

    def _snapshot(self) -> dict:
        """What warm-up steps change: parameters, optimiser state, loss scale."""
        state = {
            id(p): {k: v.clone() for k, v in self.optimizer.state[p].items()}
            for p in self.params
            if self.optimizer.state.get(p)
        }
        return {
            "params": [p.detach().clone() for p in self.params],
            "optimizer": state,
            "scaler": self.scaler.state_dict(),
        }

    def _restore(self, saved: dict) -> None:
        """Put the snapshot back IN PLACE: the graph keeps the tensors' addresses."""
        with torch.no_grad():
            for param, value in zip(self.params, saved["params"], strict=True):
                param.copy_(value)
            for param in self.params:
                before = saved["optimizer"].get(id(param), {})
                for name, value in self.optimizer.state[param].items():
                    if not isinstance(value, torch.Tensor):
                        continue
                    if name in before:
                        value.copy_(before[name])
                    else:  # state the warm-up created: as a fresh optimiser has it
                        value.zero_()
        if saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])  # fills the scale tensor in place


def why_not_graphed(training, max_grad_norm: float, device, recomputed: int, ranks: int):
    """None when a training step can be one CUDA graph, else the reason (for the log)."""
    if training.cuda_graph == "off":
        return "training.cuda_graph = off"
    if device.type != "cuda":
        return "not on a GPU"
    if recomputed:  # checkpointing's RNG stashing inside a capture is untested here
        return f"{recomputed} blocks recompute in backward"
    if training.gradient_accumulation_steps != 1:
        return "gradient accumulation"
    if max_grad_norm > 0:
        return "gradient clipping"
    if ranks > 1:
        return "several processes share the step"
    return None


def set_capturable(optimizer: torch.optim.Optimizer, device: torch.device, on: bool) -> None:
    """on: let a graph hold the optimiser step (`capturable` param groups, which torch needs
    to capture, and a device-tensor lr that the schedule fills in place). off: plain groups
    (a float lr), also for a state saved by a graphed run and resumed without graphs."""
    for group in optimizer.param_groups:
        group["capturable"] = on
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=device) if on else lr
