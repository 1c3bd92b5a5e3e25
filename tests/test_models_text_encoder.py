"""umT5 loader: key mapping against the real umT5-xxl layout, numerical agreement with an
independent forward of the original Wan T5 encoder, tokenizer and the reference's text path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, UMT5EncoderModel

import wanlora.models
from wanlora.models import load_text_encoder, load_tokenizer, write_tiny_models
from wanlora.models.assign import build_on_meta
from wanlora.models.text_encoder import (
    clean_text,
    infer_umt5_config,
    transformers_t5_key_to_wan,
    wan_t5_key_to_transformers,
)
from wanlora.models.tiny import TINY_UMT5, tiny_umt5_layout

LAYOUTS = Path(wanlora.models.__file__).parent / "layouts"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def encoder32(tiny):
    return load_text_encoder(tiny.text_encoder, tiny.tokenizer, dtype=torch.float32)


def real_umt5_layout() -> dict[str, tuple[int, ...]]:
    data = json.loads((LAYOUTS / "umt5_xxl_encoder_wan.json").read_text())
    return {name: tuple(shape) for name, shape in data["tensors"].items()}


def test_real_layout_infers_umt5_xxl_and_maps_one_to_one():
    layout = real_umt5_layout()
    config = infer_umt5_config(Path("x.pth"), layout)
    assert (config.d_model, config.d_ff, config.num_heads, config.d_kv) == (4096, 10240, 64, 64)
    assert (config.num_layers, config.vocab_size) == (24, 256384)
    assert config.relative_attention_num_buckets == 32
    model = build_on_meta(lambda: UMT5EncoderModel(config))
    model_shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    mapped = {name: wan_t5_key_to_transformers(name) for name in layout}
    assert None not in mapped.values()
    assert len(set(mapped.values())) == len(mapped)
    # encoder.embed_tokens is the same tensor as `shared`; every other parameter is covered.
    assert set(model_shapes) - set(mapped.values()) <= {"encoder.embed_tokens.weight"}
    for name, ours in mapped.items():
        assert model_shapes[ours] == layout[name], name
        assert transformers_t5_key_to_wan(ours) == name


def test_tiny_encoder_has_exactly_the_real_key_names():
    real = real_umt5_layout()
    expected = {n for n in real if not n.startswith("blocks.") or int(n.split(".")[1]) < 2}
    assert set(tiny_umt5_layout(vocab_size=100)) == expected


def test_loaded_weights_equal_the_file_and_embeddings_are_tied(tiny, encoder32):
    state = torch.load(tiny.text_encoder, weights_only=True)
    params = dict(encoder32.model.named_parameters())
    for name, tensor in state.items():
        assert torch.equal(params[wan_t5_key_to_transformers(name)], tensor.float()), name
    model = encoder32.model
    assert model.encoder.embed_tokens.weight is model.shared.weight
    assert model.config.num_heads == TINY_UMT5["num_heads"]
    bf16 = load_text_encoder(tiny.text_encoder, tiny.tokenizer)
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}


# --- independent reference of the original Wan T5 encoder ----------------------------------


def relative_position_bucket(rel_pos, num_buckets, max_dist=128):
    num_buckets //= 2  # bidirectional
    buckets = (rel_pos > 0).long() * num_buckets
    rel_pos = rel_pos.abs()
    max_exact = num_buckets // 2
    large = (
        max_exact
        + (
            torch.log(rel_pos.float() / max_exact)
            / math.log(max_dist / max_exact)
            * (num_buckets - max_exact)
        ).long()
    )
    large = torch.minimum(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(rel_pos < max_exact, rel_pos, large)


def t5_norm(x, weight, eps=1e-6):
    return weight * (x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps))


def wan_t5_reference(sd, ids, mask):
    num_buckets, heads = sd["blocks.0.pos_embedding.embedding.weight"].shape
    num_layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    x = F.embedding(ids, sd["token_embedding.weight"])
    b, length, _ = x.shape
    rel_pos = torch.arange(length).unsqueeze(0) - torch.arange(length).unsqueeze(1)
    buckets = relative_position_bucket(rel_pos, num_buckets)
    key_mask = torch.zeros(b, 1, 1, length).masked_fill(
        mask.view(b, 1, 1, length) == 0, torch.finfo(torch.float32).min
    )
    for i in range(num_layers):
        p = f"blocks.{i}."
        pos_bias = F.embedding(buckets, sd[p + "pos_embedding.embedding.weight"]).permute(2, 0, 1)
        y = t5_norm(x, sd[p + "norm1.weight"])
        q, k, v = ((y @ sd[p + f"attn.{n}.weight"].T).view(b, length, heads, -1) for n in "qkv")
        scores = torch.einsum("binc,bjnc->bnij", q, k) + pos_bias.unsqueeze(0) + key_mask
        attn = torch.einsum("bnij,bjnc->binc", torch.softmax(scores, dim=-1), v)
        x = x + attn.reshape(b, length, -1) @ sd[p + "attn.o.weight"].T
        y = t5_norm(x, sd[p + "norm2.weight"])
        gate = F.gelu(y @ sd[p + "ffn.gate.0.weight"].T, approximate="tanh")
        x = x + ((y @ sd[p + "ffn.fc1.weight"].T) * gate) @ sd[p + "ffn.fc2.weight"].T
    return t5_norm(x, sd["norm.weight"])


def test_encoder_matches_independent_wan_t5_forward(tiny, encoder32):
    sd = {n: t.float() for n, t in torch.load(tiny.text_encoder, weights_only=True).items()}
    prompts = ["a red cube on a wooden table", "cartoon screencap in rm artstyle, a cat"]
    ids, mask = encoder32.tokenize(prompts)
    expected = wan_t5_reference(sd, ids, mask)
    outputs = encoder32.encode(prompts)
    lengths = mask.sum(dim=1).tolist()
    assert [o.shape for o in outputs] == [(n, 64) for n in lengths]
    for out, ref, n in zip(outputs, expected, lengths, strict=True):
        torch.testing.assert_close(out, ref[:n], atol=1e-4, rtol=1e-4)
    assert expected.std() > 0.1
    # Different prompts give different embeddings.
    assert not torch.allclose(outputs[0][0], outputs[1][0])


# --- tokenizer and text path ---------------------------------------------------------------


def test_tiny_tokenizer_is_t5_style_and_loads_with_autotokenizer(tiny):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny.tokenizer))
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("a red cube").input_ids
    assert ids[-1] == 1 and 2 not in ids and len(ids) >= 4
    assert (tiny.tokenizer / "spiece.model").stat().st_size > 0
    assert type(load_tokenizer(tiny.tokenizer)) is type(tokenizer)


def test_clean_text_like_the_reference():
    assert clean_text("  a &amp;amp; b\n\n c\t d  ") == "a & b c d"
    assert clean_text("caf\u00c3\u00a9") == "caf\u00e9"  # ftfy repairs mojibake


def test_tokenize_pads_to_512_with_eos_and_truncates(encoder32):
    ids, mask = encoder32.tokenize(["a cat", "word " * 1000])
    assert ids.shape == mask.shape == (2, 512)
    n = int(mask[0].sum())
    assert ids[0, n - 1] == 1 and (ids[0, n:] == 0).all() and (mask[0, n:] == 0).all()
    assert mask[1].sum() == 512 and ids[1, -1] == 1


def test_encode_cleans_text_first(encoder32):
    a, b = encoder32.encode(["a  red &amp;amp; blue\ncube", "a red & blue cube"])
    assert torch.equal(a, b)


def test_encode_output_is_bf16_by_default(tiny):
    encoder = load_text_encoder(tiny.text_encoder, load_tokenizer(tiny.tokenizer))
    (out,) = encoder.encode(["a photo of a dog"])
    assert out.dtype == torch.bfloat16 and out.shape[1] == encoder.dim == 64
    assert torch.isfinite(out.float()).all()
