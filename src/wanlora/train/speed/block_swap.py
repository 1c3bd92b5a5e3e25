"""Block swap: chosen transformer blocks' frozen linear weights stream in from host memory.

Why: the fp8 weights of one 14B expert are 13.1 GiB, so below ~16 GiB of GPU memory they
cannot all stay on the card. Swapped blocks keep their big weights in pinned host memory and
copy them into a small ring of GPU buffers just before each use, overlapped with compute.

What moves: the `weight` of each of a swapped block's ten linears (the LoRA base layers, i.e.
Fp8Linear's float8_e4m3fn weights: 98% of a block's bytes). Everything else of the block
(norms, biases, fp8 scales, the modulation table, the LoRA) stays on the GPU. Host->GPU only:
the weights are frozen, nothing is ever copied back. The bytes copied are the bytes held, so
a swapped step computes exactly what an unswapped one does.

Where they live: one host region per swapped block, pinned in place with cudaHostRegister
(exactly the bytes asked for; torch's pinned allocator rounds every allocation up to a power
of two, +80% for an ffn weight). A weight that is not in a GPU slot points at its host copy
(`param.data`), so the model always holds the right values, and a swapped block run without
its hooks fails with a device mismatch instead of computing with another block's weights.

The ring: `ring` slots allocated once on the GPU, each a set of tensors shaped like one
block's weights. Loading block b into a slot: the compute stream records an event (all work
launched so far, including every use of the slot's previous block); a side stream waits on
it, copies b's host region in (non-blocking) and records a ready event; b's weights point at
the slot; before b runs, the compute stream waits on the ready event. A slot remembers its
block, so loading a block it already holds costs nothing: the last blocks of a forward are the
first of the backward's recompute, and the backward's last blocks the next step's first.

When: a forward pre-hook on each swapped block loads it (unless its prefetch already did),
makes the compute stream wait, and prefetches the next `ring - 1` swapped blocks of this pass.
The pass direction comes from the model's own hooks: its forward pre-hook starts a forward pass
(ascending order); its forward hook ends it, so block calls after that are the backward's
recomputes (descending order). The prediction only decides prefetching: each block always
loads itself before it runs, whatever order the calls come in.

Why swapped blocks must be recomputed (gradient checkpointing): a recomputed block keeps no
reference to its weights after its forward, and in backward its weights are needed only from
its recompute until its own backward is launched -- which is before the previous block's
recompute starts, the earliest moment its slot can be reused. A block that kept its
activations could hold its weights (a compiled block may save the fp8 input itself) until the
backward reaches it, long after the ring moved on. The model's forward pre-hook refuses a
grad-enabled forward whose swapped blocks are not checkpointed.

torch.compile: each block is compiled in place (`block.compile()` compiles `_call_impl`, the
module's hooks included); the block hooks are `torch.compiler.disable`d, so they run eagerly
either way. Dynamo does not guard on hooks: install the swap before the first forward of a
compiled block. Slot tensors have the weights' shapes, dtypes and strides, so re-pointing
`param.data` between calls changes no guard: no recompiles (checked on the CPU with inductor
and with the min-cut partitioner, tests/test_block_swap.py: bit-identical to compiled
resident blocks).

CUDA graphs: a swapped step is not graphed (its blocks recompute; the ring's Python-side
bookkeeping and the `param.data` re-pointing happen between kernels).

On the CPU (tests): the same bookkeeping with plain synchronous copies into CPU slots, no
streams or events, and unpinned host regions.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from ...lora.keys import BLOCK_LINEARS

log = logging.getLogger(__name__)

_ALIGN = 512  # bytes: every weight's offset in a host region (keeps dtype views aligned)
_PAGE = 4096  # cudaHostRegister pins whole pages


def block_weights(block: nn.Module) -> list[nn.Parameter]:
    """The streamed tensors of one block: its ten linears' weights (LoRA base layers)."""
    weights = []
    for path in BLOCK_LINEARS:
        module = block.get_submodule(path)
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        weights.append(base.weight)
    return weights


def block_weight_bytes(block: nn.Module) -> int:
    return sum(w.numel() * w.element_size() for w in block_weights(block))


# --- host regions: one per swapped block, pinned in place on a CUDA machine -----------------
def _layout(weights: list[torch.Tensor]) -> tuple[list[int], int]:
    """Byte offset of each weight in a block's host region, and the region's size."""
    offsets, size = [], 0
    for w in weights:
        offsets.append(size)
        size += -(-w.numel() * w.element_size() // _ALIGN) * _ALIGN
    return offsets, size


def _host_region(size: int, pin: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(allocation, view of `size` bytes in it, whether the view's pages are pinned)."""
    if not pin:
        raw = torch.empty(size, dtype=torch.uint8)
        return raw, raw, False
    raw = torch.empty(size + 2 * _PAGE, dtype=torch.uint8)
    start = -raw.data_ptr() % _PAGE
    pages = -(-size // _PAGE) * _PAGE
    err = int(torch.cuda.cudart().cudaHostRegister(raw.data_ptr() + start, pages, 0))
    if err != 0:  # still correct, only slower: the copies can no longer overlap compute
        log.warning("block swap: cudaHostRegister failed (cudaError %d); memory not pinned", err)
    return raw, raw[start : start + size], err == 0


def _unpin(views: list[torch.Tensor]) -> None:
    for view in views:
        torch.cuda.cudart().cudaHostUnregister(view.data_ptr())


def _views(
    region: torch.Tensor, offsets: list[int], like: list[torch.Tensor]
) -> list[torch.Tensor]:
    out = []
    for off, w in zip(offsets, like, strict=True):
        n = w.numel() * w.element_size()
        out.append(region[off : off + n].view(w.dtype).view(w.shape))
    return out


@dataclass
class _Slot:
    tensors: list[torch.Tensor]  # on the device, one per streamed weight
    block: int | None = None  # the block whose weights it holds (or is receiving)
    ready: torch.cuda.Event | None = None  # recorded on the copy stream after the copy
    used: int = 0  # when it was last wanted (least recently wanted is evicted first)


@dataclass
class SwapStats:
    loads: int = 0  # block copies issued host->device
    bytes: int = 0  # bytes copied host->device


class BlockSwap:
    """Stream the linear weights of `model.blocks[i]` for i in `indices` from host memory.

    model: a WanTransformer3DModel after prepare_base and add_lora (its weights on the CPU or
        on `device`); everything not streamed is moved to `device`, the streamed weights to
        host regions (their previous storage is freed).
    ring: GPU slots (>= 2: one in use, one filling); `ring - 1` blocks are prefetched.
    """

    def __init__(
        self, model: nn.Module, indices: list[int], device: torch.device | str, ring: int = 2
    ):
        n = len(model.blocks)
        self.indices = sorted(set(indices))
        if any(i < 0 or i >= n for i in self.indices):
            raise ValueError(f"block indices {indices} out of range for {n} blocks")
        if ring < 2:
            raise ValueError("a block swap needs a ring of at least 2 slots")
        self.model = model
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.ring = min(ring, len(self.indices))
        self.stats = SwapStats()
        self._position = {b: p for p, b in enumerate(self.indices)}
        self._direction = 1  # +1: a forward pass; -1: the backward's recomputes
        self._tick = 0
        self._active = True
        self._handles: list = []
        self._weights = {b: block_weights(model.blocks[b]) for b in self.indices}
        self._check_uniform()
        self._host: dict[int, list[torch.Tensor]] = {}
        self._regions: list[torch.Tensor] = []  # keeps the host allocations alive
        pinned: list[torch.Tensor] = []
        for b in self.indices:
            self._to_host(b, pinned)
        # the finalizer holds the pinned regions: unregistered before they can be freed
        self._unpin = weakref.finalize(self, _unpin, pinned)
        _move_resident(model, self.device, {id(w) for ws in self._weights.values() for w in ws})
        like = self._host[self.indices[0]] if self.indices else []
        self._slots = [
            _Slot([torch.empty_like(h, device=self.device) for h in like]) for _ in range(self.ring)
        ]
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._install_hooks()
        model.wanlora_block_swap = self
        if self.cuda:  # the streamed weights' old GPU storage goes back to the driver
            torch.cuda.empty_cache()

    # --- setup ----------------------------------------------------------------------------
    def _check_uniform(self) -> None:
        shapes = {tuple((tuple(w.shape), w.dtype) for w in ws) for ws in self._weights.values()}
        if len(shapes) > 1:
            raise ValueError("swapped blocks must have the same weight shapes and dtypes")
        for b in self.indices:
            for module in self.model.blocks[b].modules():
                if getattr(module, "weight_t", None) is not None:
                    raise ValueError(
                        f"block {b} keeps transposed fp8 copies (fast mode); they are not "
                        "streamed: plan without them when blocks swap"
                    )

    def _to_host(self, b: int, pinned: list[torch.Tensor]) -> None:
        weights = self._weights[b]
        offsets, size = _layout(weights)
        raw, region, is_pinned = _host_region(size, pin=self.cuda)
        if is_pinned:
            pinned.append(region)
        views = _views(region, offsets, weights)
        for view, w in zip(views, weights, strict=True):
            view.copy_(w.detach())
            w.data = view  # the old storage (GPU or CPU) is freed here
        self._regions.append(raw)
        self._host[b] = views

    def _install_hooks(self) -> None:
        self._handles.append(self.model.register_forward_pre_hook(self._start_forward))
        self._handles.append(self.model.register_forward_hook(self._end_forward))
        for b in self.indices:
            hook = torch.compiler.disable(self._block_hook(b))
            self._handles.append(self.model.blocks[b].register_forward_pre_hook(hook))

    # --- sizes, for plans and logs ------------------------------------------------------------
    @property
    def block_bytes(self) -> int:
        return (
            sum(h.numel() * h.element_size() for h in self._host[self.indices[0]])
            if self.indices
            else 0
        )

    @property
    def host_bytes(self) -> int:
        return self.block_bytes * len(self.indices)

    @property
    def device_bytes(self) -> int:
        return self.block_bytes * len(self._slots)

    def slot_tensors(self) -> list[torch.Tensor]:
        """Every device tensor the swap allocated (the ring), for tests and accounting."""
        return [t for slot in self._slots for t in slot.tensors]

    # --- the schedule -------------------------------------------------------------------------
    def _order(self) -> list[int]:
        return self.indices if self._direction > 0 else self.indices[::-1]

    def _start_forward(self, _model, _args) -> None:
        if not self._active or not self.indices:
            return
        if torch.is_grad_enabled():
            self._check_recomputed()
        self._direction = 1
        self._want(self._order()[: self.ring])  # overlaps the embeddings

    def _end_forward(self, _model, _args, _output) -> None:
        if not self._active or not self.indices:
            return
        self._direction = -1  # what runs next is the backward's recompute, last block first
        self._want(self._order()[: self.ring])

    def _block_hook(self, b: int):
        def before_block(_block, _args) -> None:
            if not self._active:
                return
            position = self._position[b]
            if self._direction < 0:
                position = len(self.indices) - 1 - position
            self._want(self._order()[position : position + self.ring])
            slot = self._slot_of(b)
            if self.cuda and slot.ready is not None:
                torch.cuda.current_stream(self.device).wait_event(slot.ready)

        return before_block

    def _check_recomputed(self) -> None:
        checkpointed = getattr(self.model, "gradient_checkpointing", False)  # diffusers' flag
        chosen = set(getattr(self.model, "wanlora_checkpointed", self.indices))
        if not checkpointed or not set(self.indices) <= chosen:
            raise RuntimeError(
                "block swap: swapped blocks must be recomputed in backward (gradient "
                f"checkpointing of blocks {self.indices}); a block that keeps its activations "
                "can hold its weights after the ring has reused their slot"
            )

    def _slot_of(self, b: int) -> _Slot:
        return next(slot for slot in self._slots if slot.block == b)

    def _want(self, blocks: list[int]) -> None:
        """Make every block of `blocks` (at most `ring`) held or on its way, in order."""
        self._tick += 1
        held = {slot.block: slot for slot in self._slots}
        for b in blocks:
            if b in held:
                held[b].used = self._tick
        for b in blocks:
            if b in held:
                continue
            victim = min((s for s in self._slots if s.block not in blocks), key=lambda s: s.used)
            self._load(b, victim)
            held[b] = victim

    def _load(self, b: int, slot: _Slot) -> None:
        if slot.block is not None:  # its weights go back to pointing at their host copy
            for w, host in zip(self._weights[slot.block], self._host[slot.block], strict=True):
                w.data = host
        if self.cuda:
            free = torch.cuda.current_stream(self.device).record_event()
            with torch.cuda.stream(self.copy_stream):
                self.copy_stream.wait_event(free)
                for dst, src in zip(slot.tensors, self._host[b], strict=True):
                    dst.copy_(src, non_blocking=True)
                slot.ready = self.copy_stream.record_event()
        else:
            for dst, src in zip(slot.tensors, self._host[b], strict=True):
                dst.copy_(src)
        for w, dst in zip(self._weights[b], slot.tensors, strict=True):
            w.data = dst
        slot.block, slot.used = b, self._tick
        self.stats.loads += 1
        self.stats.bytes += self.block_bytes

    # --- teardown -----------------------------------------------------------------------------
    def remove(self) -> None:
        """Remove the hooks and put every streamed weight back on the device for good (a plain
        resident model again, if the memory is there); the host regions and slots are freed."""
        if not self._active:
            return
        self._active = False  # a compiled block may still call its (disabled) hook: a no-op
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.cuda:
            torch.cuda.synchronize(self.device)
        for b in self.indices:
            for w, host in zip(self._weights[b], self._host[b], strict=True):
                w.data = host.to(self.device, copy=True)
        self._slots.clear()
        self._host.clear()
        self._unpin()  # unregisters the pinned pages, then lets them go
        self._regions.clear()
        if getattr(self.model, "wanlora_block_swap", None) is self:
            self.model.wanlora_block_swap = None


def install_block_swap(model: nn.Module, plan, device: torch.device) -> BlockSwap | None:
    """The swap a plan asks for (swap_plan.SwapPlan: `swap_indices`, `ring`), or None.

    Call after prepare_base, add_lora and prepare_for_speed (which must recompute every
    swapped block) and before the first forward; the optimiser may be made before or after
    (parameters keep their identity)."""
    indices = list(getattr(plan, "swap_indices", ()))
    if not indices:
        return None
    swap = BlockSwap(model, indices, device, ring=plan.ring)
    log.info(
        "block swap: %d/%d blocks streamed from host memory (%.1f GiB pinned, %d GPU slots)",
        len(indices),
        len(model.blocks),
        swap.host_bytes / 2**30,
        swap.ring,
    )
    return swap


def _move_resident(model: nn.Module, device: torch.device, streamed: set[int]) -> None:
    """model.to(device) for every parameter and buffer except the streamed weights."""
    for module in model.modules():
        for param in module._parameters.values():
            if param is not None and id(param) not in streamed and param.device != device:
                param.data = param.data.to(device)
        for name, buf in module._buffers.items():
            if buf is not None and buf.device != device:
                module._buffers[name] = buf.to(device)
