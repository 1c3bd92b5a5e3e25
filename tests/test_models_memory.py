"""Loading a DiT must not need twice its size in RAM (the 14B files are 28 GB)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

from wanlora.models.assign import build_on_meta
from wanlora.models.dit import diffusers_key_to_wan

MEASURE = textwrap.dedent(
    """
    import json, sys, threading, time
    import psutil
    import torch, diffusers, safetensors
    import wanlora.models.dit

    def anon_bytes():
        # anonymous memory only: the mmapped file's pages are page cache, not a second copy
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024

    process = psutil.Process()
    peak = baseline = anon_bytes()
    # RSS sampled here, not ru_maxrss: that is a lifetime peak, and under memory pressure the
    # shared libraries' pages touched while importing can be reclaimed before the baseline.
    rss_peak = rss_baseline = process.memory_info().rss
    done = False

    def sample():
        global peak, rss_peak
        while not done:
            peak = max(peak, anon_bytes())
            rss_peak = max(rss_peak, process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    model, info = wanlora.models.dit.load_dit(sys.argv[1])
    # Read every weight once, as a first step does: mmapped pages count in RSS once touched.
    touched = sum(float(p.float().abs().sum()) for p in model.parameters())
    done = True
    sampler.join()
    peak = max(peak, anon_bytes())
    rss_peak = max(rss_peak, process.memory_info().rss)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"baseline": baseline, "peak": peak, "model_bytes": size,
                      "rss_growth": rss_peak - rss_baseline}))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_loading_a_dit_peaks_well_under_twice_its_size(tmp_path):
    # ~300 MB fp16 in the real layout: dim 1024 (8 heads), ffn 4096, 9 layers.
    model = build_on_meta(
        lambda: WanTransformer3DModel(
            num_attention_heads=8, ffn_dim=4096, num_layers=9, text_dim=64
        )
    )
    state = {
        diffusers_key_to_wan(n): torch.full(p.shape, 0.01, dtype=torch.float16)
        for n, p in model.named_parameters()
    }
    path = tmp_path / "big_fp16.safetensors"
    save_file(state, str(path))
    del state
    file_size = path.stat().st_size
    assert file_size > 250e6

    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    # The model is the file's size, plus the time path kept in float32.
    assert file_size < numbers["model_bytes"] < 1.1 * file_size
    growth = numbers["peak"] - numbers["baseline"]
    print(f"file {file_size / 1e6:.0f} MB, peak growth {growth / 1e6:.0f} MB")
    # The loaded model itself is ~1x; streaming adds one tensor at a time, not a second copy.
    assert growth < 1.3 * file_size
    # RSS also counts the mmapped file's pages (page cache, shared with the loaded tensors)
    assert numbers["rss_growth"] < 2 * file_size
