"""The load benchmark's pieces at tiny size on the CPU: the writer, eviction, the measures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from benchmarks_module import load_benchmark
from wanlora.models.dit import dit_info_from_shapes, load_dit, wan_key_to_diffusers
from wanlora.models.tiny import tiny_dit_layout


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_load.py")


@pytest.fixture(scope="module")
def tiny_file(bench, tmp_path_factory):
    layout = {name: list(shape) for name, shape in tiny_dit_layout().items()}
    path = bench.write_dit_file(tmp_path_factory.mktemp("bench") / "dit.safetensors", layout)
    return path, layout


def test_written_file_is_valid_and_loads_as_fp8(bench, tiny_file):
    path, layout = tiny_file
    assert path.stat().st_size == bench.expected_size(layout)
    assert bench.verify_file(path, layout) == len(layout)
    assert not list(path.parent.glob(".*.tmp"))  # written under a temporary name, renamed

    model, info = load_dit(path, dtype=torch.float8_e4m3fn, device="cpu")
    assert info.num_layers == 2 and info.file_dtype == torch.float16
    params = dict(model.named_parameters())
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for name in layout:  # the key set itself: verify_file
            written = f.get_tensor(name)
            assert list(written.shape) == layout[name] and written.dtype == torch.float16
            assert written.abs().max() < 1  # random normal * 0.02, no inf/nan
            loaded = params[wan_key_to_diffusers(name)].detach()
            expected = written.to(torch.float8_e4m3fn).to(loaded.dtype)
            # bit-equal (fp8 weights, and the float32-kept time embedding's fp8 values)
            assert torch.equal(loaded.view(torch.uint8), expected.view(torch.uint8)), name
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn


def test_raw_read_and_eviction(bench, tiny_file):
    path, _ = tiny_file
    result = bench.measure_raw_read(path, chunk=4096)
    assert result["bytes"] == path.stat().st_size and result["gbps"] > 0
    assert result["rssanon_peak_gib"] > 0 and result["vmrss_peak_gib"] >= result["rssanon_peak_gib"]
    bench.evict(path)
    fraction = bench.resident_fraction(path)
    assert fraction is None or 0 <= fraction <= 1


def test_layers_option_keeps_the_other_tensors(bench):
    full = bench.expert_layout()
    one = bench.expert_layout(1)
    assert len(full) == 15 + 40 * 27 and len(one) == 15 + 27
    assert 28.5e9 < bench.expected_size(full) < 28.7e9  # the real *_14B_fp16.safetensors
    shapes = {n: (torch.float16, tuple(s)) for n, s in one.items()}
    info = dit_info_from_shapes(Path("x"), shapes)
    assert (info.num_layers, info.dim, info.ffn_dim) == (1, 5120, 13824)


def test_load_measure_checks_fp8_bits(bench, tiny_file):
    path, _ = tiny_file
    result = bench.measure_load(path, "cpu")
    assert result["fp8_ok"] and result["bit_identical"] and result["num_layers"] == 2
    assert result["seconds"] > 0 and result["rssanon_peak_gib"] > 0
