"""The memory plan below the smallest resident plan: stream blocks from host memory (issue 23).

`plan_speed` (memory_plan.py) picks the weight storage and recompute count from one memory
model. Its smallest plan (fp8 storage, every block recomputed) peaks at 17.7 GiB for the 14B
expert at 3600 tokens, so no resident plan fits a 16, 12 or 8 GiB card. `plan_with_swap`
starts from that plan and, when it does not fit, streams the fewest blocks that make it fit
(train/block_swap.py):

- which: `spread(k, n)` -- evenly over the depth, so each block's copy overlaps the compute of
  the resident blocks before it instead of queueing behind other copies;
- recompute: every block (swapped blocks must recompute; below 17.7 GiB there is no room to
  keep any block's activations anyway);
- GPU peak: the resident plan's peak minus the streamed blocks' weights plus the ring's slots
  (the same memory model, so the calibration of memory_plan.py carries over);
- host RAM: the pinned copies of the streamed weights plus the process's own baseline; the
  DiT file is read through mmap, so the fp16 file is never whole in the process's memory
  (its pages are page cache the kernel reclaims);
- host->GPU bytes per step: each swapped block is copied in for the forward and again for
  the backward's recompute, except the `ring` blocks at each turn that a slot still holds:
  2 (k - ring) blocks a step;
- time: the copies overlap compute; a pass takes about max(compute, transfer) plus a small
  non-overlapped part (`projected_step_seconds`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .checkpointing import spread
from .memory_plan import (
    DitShape,
    GiB,
    SpeedPlan,
    plan_speed,
    predict_peak_bytes,
    usable_bytes,
)

SWAP_RING = 2  # GPU slots: one block in use, the next one arriving
# the process's own host memory besides the pinned weights: measured 0.54 GiB RssAnon while
# loading the 14B expert onto a GPU (bench_load.py, RESULTS.md); training adds the cached
# samples, the optimiser's bookkeeping and torch.compile's graphs: an estimate, not measured
HOST_BASE_BYTES = 3 * GiB
PCIE4_X16_BYTES_PER_S = 25e9  # what a PCIe 4.0 x16 slot delivers from pinned memory
# share of the shorter of (compute, transfer) in a pass that does not overlap: the wait for
# the first copies of a pass, copies queued behind a slot still in use. An estimate to be
# calibrated on the GPU (no measurement yet)
SWAP_NON_OVERLAP = 0.1
# a step with every block recomputed does forward + recompute + backward (2x forward): the
# forward pass is 1/4 of the work and the backward pass (recompute + backward) 3/4 by FLOPs
# of the linears; attention's backward (2.5x its forward) moves it a little: 1/4 is used
FORWARD_SHARE = 0.25


@dataclass(frozen=True)
class SwapPlan(SpeedPlan):
    """A SpeedPlan (everything prepare_base / prepare_for_speed read) plus the block swap."""

    blocks_swapped: int = 0
    swap_indices: tuple[int, ...] = ()
    ring: int = SWAP_RING
    block_bytes: int = 0  # streamed bytes of one block
    host_bytes: int | None = None  # predicted peak host memory of the process (pinned + base)
    h2d_bytes_per_step: int = 0  # host -> GPU, steady state (the first step copies more)

    def transfer_seconds(self, link_bytes_per_s: float = PCIE4_X16_BYTES_PER_S) -> float:
        """Seconds the copies of one step take on a link of that bandwidth (not overlapped)."""
        return self.h2d_bytes_per_step / link_bytes_per_s

    def projected_step_seconds(
        self, compute_s: float, link_bytes_per_s: float = PCIE4_X16_BYTES_PER_S
    ) -> float:
        """A step's seconds given the same plan's step without swap (`compute_s`): each
        pass takes max(compute, transfer) plus a non-overlapped share of the shorter."""
        total = 0.0
        transfer = self.transfer_seconds(link_bytes_per_s) / 2  # half each pass
        for share in (FORWARD_SHARE, 1 - FORWARD_SHARE):
            compute = compute_s * share
            total += max(compute, transfer) + SWAP_NON_OVERLAP * min(compute, transfer)
        return total

    def describe(self) -> str:
        """One line: storage, blocks streamed, recompute, compile, GPU peak, host RAM, link."""
        if not self.blocks_swapped:
            return super().describe()
        storage = "fp8 storage" if self.fp8_storage else "16-bit storage"
        if self.fp8_compute:
            storage += " + FAST fp8 matmuls"
        text = (
            f"{storage}, {self.blocks_swapped}/{self.num_blocks} blocks streamed from host "
            f"memory, {self.recompute}/{self.num_blocks} recomputed, "
            f"{'compiled' if self.compile else 'eager'}"
        )
        if self.predicted_peak is not None and self.budget is not None:
            text += (
                f"; predicted peak {self.predicted_peak / GiB:.1f} GiB of "
                f"{self.budget / GiB:.1f} GiB"
            )
        if self.host_bytes is not None:
            text += f"; host RAM ~{self.host_bytes / GiB:.0f} GiB"
        return text + (
            f"; {self.h2d_bytes_per_step / 1e9:.1f} GB host->GPU per step "
            f"(~{self.transfer_seconds():.1f} s at PCIe 4.0 x16, overlapped)"
        )



def swap_peak_bytes(
    shape: DitShape,
    tokens: int,
    swapped: int,
    *,
    fp8_storage: bool = True,
    compiled: bool = True,
    rank: int = 16,
    weight_bytes: int = 2,
    ring: int = SWAP_RING,
    per_token: bool = False,
) -> int:
    """Predicted GPU peak with `swapped` blocks streamed and every block recomputed (bytes)."""
    peak = predict_peak_bytes(
        shape,
        tokens,
        fp8_storage=fp8_storage,
        recompute=shape.num_layers,
        compiled=compiled,
        rank=rank,
        weight_bytes=weight_bytes,
        per_token=per_token,
    )
    swapped = min(max(swapped, 0), shape.num_layers)
    saved = swapped - min(ring, swapped)  # the ring holds `ring` blocks' weights
    return peak - saved * streamed_block_bytes(shape, fp8_storage, weight_bytes)


def streamed_block_bytes(shape: DitShape, fp8_storage: bool = True, weight_bytes: int = 2) -> int:
    """Bytes of one block's linear weights (what a swap streams), in their storage dtype."""
    return shape.linear_weights // shape.num_layers * (1 if fp8_storage else weight_bytes)


def h2d_bytes_per_step(swapped: int, block_bytes: int, ring: int = SWAP_RING) -> int:
    """Host->GPU bytes of a steady step: forward and recompute each copy all swapped blocks but
    the `ring` ones a slot still holds from the pass before."""
    return 2 * max(0, swapped - ring) * block_bytes


def plan_with_swap(
    training,
    device: torch.device,
    compute_dtype: torch.dtype,
    *,
    tokens: int,
    shape: DitShape,
    free_bytes: int | None = None,
    rank: int = 16,
    ring: int = SWAP_RING,
    blocks_to_swap: int | None = None,
    per_token: bool = False,
) -> SwapPlan:
    """`plan_speed`, then the fewest streamed blocks that bring its peak under the budget.

    A resident plan that fits is returned as is (0 blocks streamed). Otherwise every block is
    recomputed and k = ring + 1 .. n blocks are tried (fewer than ring + 1 saves nothing: the
    ring itself holds `ring` blocks); none fitting gives all n streamed with fits=False.
    `blocks_to_swap`: exactly that many instead (benchmarks; the reference's --blocks_to_swap).
    Swapping needs recompute: with training.checkpointing = "none" nothing is streamed.
    `per_token`: the step passes per-token timesteps (predict_peak_bytes).
    """
    base = plan_speed(
        training,
        device,
        compute_dtype,
        tokens=tokens,
        shape=shape,
        free_bytes=free_bytes,
        rank=rank,
        per_token=per_token,
    )
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(SpeedPlan)}
    n = shape.num_layers
    if base.predicted_peak is None or (base.fits and not blocks_to_swap):
        return SwapPlan(**fields, ring=ring)
    if base.checkpointing == "none":
        fields["why_not"] = 'training.checkpointing = "none": streamed blocks must recompute'
        return SwapPlan(**fields, ring=ring)
    weight_bytes = 4 if compute_dtype == torch.float32 else 2
    fp8 = base.fp8_storage
    usable = usable_bytes(base.budget)

    def peak(k: int) -> int:
        return swap_peak_bytes(
            shape,
            tokens,
            k,
            fp8_storage=fp8,
            compiled=base.compile,
            rank=rank,
            weight_bytes=weight_bytes,
            ring=ring,
            per_token=per_token,
        )

    if blocks_to_swap is not None:
        k = min(max(blocks_to_swap, 0), n)
    else:
        k = next((k for k in range(ring + 1, n + 1) if peak(k) <= usable), n)
    block = streamed_block_bytes(shape, fp8, weight_bytes)
    fields.update(
        recompute=n,
        predicted_peak=peak(k),
        fits=peak(k) <= usable,
        fp8_transposed=False,  # the transposed copies are not streamed: no room for them
    )
    return SwapPlan(
        **fields,
        blocks_swapped=k,
        swap_indices=tuple(spread(k, n)),
        ring=ring,
        block_bytes=block,
        host_bytes=HOST_BASE_BYTES + k * block,
        h2d_bytes_per_step=h2d_bytes_per_step(k, block, ring),
    )


def host_load_peak_bytes(shape: DitShape, plan: SwapPlan, weight_bytes: int = 2) -> int:
    """Host memory while loading when the DiT is first built on the CPU in its storage dtype
    (load_dit(device="cpu")) and then split: the whole model plus one block being pinned.
    Loading each swapped tensor straight into its pinned region peaks at `plan.host_bytes`."""
    linear = shape.linear_weights * (1 if plan.fp8_storage else weight_bytes)
    model = linear + shape.other16_weights * weight_bytes + shape.float32_weights * 4
    return max(plan.host_bytes or 0, HOST_BASE_BYTES + model + plan.block_bytes)
