"""The `local` backend through its real code path, with a tiny random Qwen2.5-VL built offline.

Its words are nonsense; the test checks the plumbing: the model, tokenizer and image
processor load from a folder, one caption file per image, the style phrase is put first,
resume skips finished images.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from wanlora.captioning import caption_dataset
from wanlora.captioning.local_backend import LocalVLMBackend
from wanlora.errors import WanloraError

PHRASE = "tiny test style"
SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# the shape of Qwen2.5-VL's chat template: ChatML, one placeholder per image
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen25_vl(folder):
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(["a red square on a plain background in soft light"] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [1],
            "window_size": 56,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    # sample (a random model's greedy output is often one repeated blank token), never
    # blanks or special tokens, so every answer has visible (nonsense) words
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()]
    model.generation_config = GenerationConfig(
        do_sample=True,
        top_k=0,
        suppress_tokens=sorted(set(blank) | (set(ids.values()) - {ids["<|im_end|>"]})),
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # small pixel budget: a few dozen vision tokens per image keeps the test fast
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_qwen25_vl(tmp_path_factory.mktemp("tiny-qwen25-vl"))


def test_local_backend_captions_each_image_and_resumes(tiny_model, tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(data / "one.png")
    Image.new("RGB", (90, 160), (30, 30, 200)).save(data / "two.jpg")
    (data / "three.txt").write_text("kept as written", encoding="utf-8")
    Image.new("RGB", (64, 64), (30, 200, 30)).save(data / "three.webp")

    torch.manual_seed(0)
    backend = LocalVLMBackend(str(tiny_model), device="cpu", max_new_tokens=8)
    summary = caption_dataset(data, backend, style_tag=PHRASE)

    assert summary.ok, summary.failed
    assert [p.name for p in summary.written] == ["one.txt", "two.txt"]
    assert [p.name for p in summary.skipped] == ["three.webp"]
    for caption in summary.written:
        text = caption.read_text(encoding="utf-8")
        assert text.startswith(PHRASE + ", ") and len(text) > len(PHRASE) + 2
    # the random model never writes the phrase itself, so it was put first each time
    assert len(summary.warnings) == 2
    assert (data / "three.txt").read_text(encoding="utf-8") == "kept as written"

    again = caption_dataset(data, backend, style_tag=PHRASE)
    assert not again.written and len(again.skipped) == 3


def test_local_model_not_in_cache_says_how_to_get_it(tmp_path):
    with pytest.raises(WanloraError, match="not found.*hf download"):
        LocalVLMBackend("nobody/no-such-vl-model", device="cpu")
    with pytest.raises(WanloraError, match="no config.json"):
        LocalVLMBackend(str(tmp_path), device="cpu")  # an empty folder
