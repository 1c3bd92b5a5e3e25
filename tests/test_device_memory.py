"""What the memory plans count as free, and handing memory back between experts."""

from __future__ import annotations

import pytest
import torch

from wanlora.device_memory import available_bytes, free_device_memory, out_of_memory_detail


def test_free_device_memory_on_the_cpu_collects_cycles():
    import gc
    import weakref

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    alive = weakref.ref(a)
    del a, b
    enabled = gc.isenabled()
    gc.disable()
    try:
        assert alive() is not None
        free_device_memory(torch.device("cpu"))
        assert alive() is None
    finally:
        if enabled:
            gc.enable()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_freed_blocks_count_as_available_and_go_back_to_the_driver():
    device = torch.device("cuda")
    free_device_memory(device)
    before = available_bytes(device)
    block = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    del block  # freed, but still reserved by the caching allocator
    assert torch.cuda.memory_reserved(device) >= 1 << 30
    assert available_bytes(device) >= before - (64 << 20)  # the plan sees it as ours
    free_device_memory(device)
    assert torch.cuda.memory_reserved(device) < 1 << 30
    assert torch.cuda.mem_get_info(device)[0] >= before - (64 << 20)


def test_out_of_memory_detail_keeps_who_holds_the_card_and_drops_the_tuning_advice():
    message = (
        "CUDA out of memory. Tried to allocate 26.00 MiB. GPU 0 has a total capacity of 79.18 "
        "GiB of which 4.56 MiB is free. Process 2082 has 75.02 GiB memory in use. Including "
        "non-PyTorch memory, this process has 4.14 GiB memory in use. If reserved but "
        "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments"
    )
    detail = out_of_memory_detail(torch.OutOfMemoryError(message))
    assert detail.endswith("4.56 MiB is free. Process 2082 has 75.02 GiB memory in use")
    assert "PYTORCH_CUDA_ALLOC_CONF" not in detail and "\n" not in detail
    assert out_of_memory_detail(torch.OutOfMemoryError("")) == "CUDA out of memory"
