"""lora/keys.py: which module names are LoRA targets, and how saved keys map back to modules."""

from __future__ import annotations

import pytest
import torch

from wanlora.lora.file import lora_file_settings
from wanlora.lora.keys import down_keys, is_target, module_of_key, saved_module_name


def test_targets_are_the_ten_block_linears_only():
    assert is_target("blocks.0.attn1.to_q") and is_target("blocks.39.ffn.net.2")
    assert is_target("blocks.3.attn2.to_out.0")
    assert not is_target("blocks.0.attn1.to_out")  # the container, not the linear
    assert not is_target("condition_embedder.text_embedder.linear_1")
    assert not is_target("proj_out")
    with pytest.raises(ValueError, match="not a LoRA target"):
        saved_module_name("proj_out")


def test_saved_keys_map_back_to_their_module_stem():
    stem = saved_module_name("blocks.12.attn2.to_v")
    assert stem == "lora_unet_blocks_12_cross_attn_v"
    for key in (f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha"):
        assert module_of_key(key) == stem


def test_rank_and_alpha_are_read_off_a_files_tensors():
    stem = saved_module_name("blocks.0.ffn.net.0.proj")
    tensors = {
        f"{stem}.lora_down.weight": torch.zeros(8, 32),
        f"{stem}.lora_up.weight": torch.zeros(64, 8),
        f"{stem}.alpha": torch.tensor(4.0),
    }
    assert down_keys(tensors) == [f"{stem}.lora_down.weight"]
    settings = lora_file_settings(tensors)
    assert (settings.network_dim, settings.network_alpha) == (8, 4.0)
    del tensors[f"{stem}.alpha"]  # no alpha saved: alpha = rank (scale 1)
    assert lora_file_settings(tensors).network_alpha == 8.0
    with pytest.raises(ValueError, match="no .lora_down.weight tensors"):
        lora_file_settings({})
