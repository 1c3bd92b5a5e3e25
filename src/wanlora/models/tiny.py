"""Tiny random models written to disk in exactly the real files' key layouts and formats.

The demo and every test load these through the same loaders as the 14B files:
- two DiT experts (.safetensors, fp16, original Wan keys; dim 256 = 2 heads x 128, 2 layers),
- the VAE (.safetensors, original Wan 2.1 VAE keys; base width 8, z_dim 16, stride 4x8x8),
- the umT5 encoder (.pth state dict, original Wan keys; d_model 64, 2 layers, 2 heads),
- a tokenizer folder (a tiny sentencepiece unigram trained here, T5-style: pad 0, eos 1,
  unk 2), loadable with AutoTokenizer.from_pretrained.
write_tiny_wan22_models adds the other Wan 2.2 tasks' files, same writer, same dims:
- the two I2V-A14B experts (in 36 / out 16 channels) and the TI2V-5B DiT (in/out 48),
- the Wan 2.2 VAE (bf16; z_dim 48, base widths 10 / 16 = the real 160 / 256 over 16).
Every file has exactly the real file's key names (the first two blocks of a DiT).
Everything is generated from a seed at run time; nothing binary lives in git.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from wanlora.fsutil import atomic_path
from wanlora.models.files import DIT_TASKS

TINY_DIT = dict(dim=256, ffn_dim=512, num_layers=2, text_dim=64, freq_dim=256, channels=16)
TASK_CHANNELS = {task: channels for channels, task in DIT_TASKS.items()}  # (in, out)
TINY_VAE_BASE_DIM = 8
TINY_VAE22 = dict(base_dim=10, decoder_base_dim=16)
TINY_UMT5 = dict(d_model=64, d_ff=128, num_heads=2, num_layers=2, num_buckets=32)
TINY_VOCAB_SIZE = 600


@dataclass(frozen=True)
class TinyModelPaths:
    dit_high: Path
    dit_low: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path  # a folder


@dataclass(frozen=True)
class TinyWan22Paths:
    """The tiny I2V-A14B experts, TI2V-5B DiT and Wan 2.2 VAE (text encoder: write_tiny_models)."""

    i2v_high: Path
    i2v_low: Path
    ti2v: Path
    vae22: Path


def _random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Small random values by role, so that outputs are finite and not degenerate."""
    noise = torch.randn(shape, generator=generator)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "gamma" or ((".norm" in name or name.startswith("norm")) and leaf == "weight"):
        return 1.0 + 0.1 * noise  # RMS / layer norm scales
    if "modulation" in name:
        return noise / math.sqrt(shape[-1])
    if "pos_embedding" in name or "token_embedding" in name:
        return 0.5 * noise
    if leaf == "bias" or len(shape) == 1:
        return 0.02 * noise
    fan_in = math.prod(shape[1:])
    return noise / math.sqrt(fan_in)


def _random_state(
    layout: dict[str, tuple[int, ...]], seed: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {n: _random_tensor(n, s, generator).to(dtype) for n, s in sorted(layout.items())}


def _write_safetensors(
    path: Path, layout: dict[str, tuple[int, ...]], seed: int, dtype: torch.dtype
) -> None:
    with atomic_path(path) as tmp:
        save_file(_random_state(layout, seed, dtype), str(tmp))


def tiny_dit_layout(
    task: str = "t2v", num_layers: int = TINY_DIT["num_layers"]
) -> dict[str, tuple[int, ...]]:
    """Original-layout key -> shape of the tiny DiT of `task` ("t2v", "i2v" or "ti2v"),
    `num_layers` transformer blocks."""
    from diffusers import WanTransformer3DModel

    from wanlora.models.assign import build_on_meta
    from wanlora.models.dit import WAN_HEAD_DIM, diffusers_key_to_wan

    c = TINY_DIT
    in_channels, out_channels = TASK_CHANNELS[task]
    model = build_on_meta(
        lambda: WanTransformer3DModel(
            num_attention_heads=c["dim"] // WAN_HEAD_DIM,
            attention_head_dim=WAN_HEAD_DIM,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=c["text_dim"],
            freq_dim=c["freq_dim"],
            ffn_dim=c["ffn_dim"],
            num_layers=num_layers,
        )
    )
    return {diffusers_key_to_wan(n): tuple(p.shape) for n, p in model.named_parameters()}


def write_tiny_dit(
    path: str | Path, seed: int = 0, num_layers: int = TINY_DIT["num_layers"]
) -> Path:
    """One tiny DiT expert file (fp16, original Wan keys), e.g. deeper than the demo's two
    blocks for tests that need several blocks (block swap)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(_random_state(tiny_dit_layout(num_layers=num_layers), seed, torch.float16), str(tmp))
    return path


def tiny_vae_layout() -> dict[str, tuple[int, ...]]:
    from diffusers import AutoencoderKLWan

    from wanlora.models.assign import build_on_meta
    from wanlora.models.vae import LATENT_CHANNELS, diffusers_vae_key_to_wan

    model = build_on_meta(
        lambda: AutoencoderKLWan(base_dim=TINY_VAE_BASE_DIM, z_dim=LATENT_CHANNELS)
    )
    return {diffusers_vae_key_to_wan(n): tuple(p.shape) for n, p in model.named_parameters()}


def tiny_vae22_layout() -> dict[str, tuple[int, ...]]:
    """Original-layout key -> shape of the tiny Wan 2.2 VAE."""
    from diffusers import AutoencoderKLWan

    from wanlora.models.assign import build_on_meta
    from wanlora.models.vae22 import diffusers_vae22_key_to_wan, vae22_config

    model = build_on_meta(lambda: AutoencoderKLWan(**vae22_config(**TINY_VAE22)))
    return {diffusers_vae22_key_to_wan(n): tuple(p.shape) for n, p in model.named_parameters()}


def tiny_umt5_layout(
    vocab_size: int, d_model: int = TINY_UMT5["d_model"], **sizes: int
) -> dict[str, tuple[int, ...]]:
    """Original-layout key -> shape of the tiny umT5 encoder (`d_model`: its output width,
    which must be the DiT's text_dim: 64 for the tiny DiT, 4096 for the 14B experts;
    `sizes` override TINY_UMT5's d_ff, num_heads, num_layers: umT5-xxl at real size)."""
    from transformers import UMT5Config, UMT5EncoderModel

    from wanlora.models.assign import build_on_meta
    from wanlora.models.text_encoder import transformers_t5_key_to_wan

    c = dict(TINY_UMT5, d_model=d_model, **sizes)
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=c["d_model"],
        d_kv=c["d_model"] // c["num_heads"],
        d_ff=c["d_ff"],
        num_layers=c["num_layers"],
        num_heads=c["num_heads"],
        relative_attention_num_buckets=c["num_buckets"],
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
    )
    model = build_on_meta(lambda: UMT5EncoderModel(config))
    layout = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        original = transformers_t5_key_to_wan(name)
        if original is not None:  # encoder.embed_tokens is `shared` under another name
            layout[original] = tuple(parameter.shape)
    return layout


# Words for the tokenizer's training text: caption vocabulary plus made-up syllable words.
_CAPTION_WORDS = (
    "a an the of in on at with and or to from by is are this that photo image picture "
    "cartoon screencap anime style artstyle painting drawing render realistic portrait "
    "woman man girl boy person cat dog bird horse car house tree flower sky cloud sun "
    "red green blue yellow black white orange purple pink brown gray dark light bright "
    "small large tall short long wide old young happy sitting standing walking running "
    "holding wearing looking smiling shirt dress hat hair eyes face hand table chair "
    "room street city forest beach mountain river water night day morning evening "
    "close up shot wide angle view background foreground lighting soft hard shadow "
    "cube sphere square circle triangle line pattern texture color colors frame"
)
_SYLLABLES = "ka ri to mo na se lu vi po de ga zu fe hi jo be ra ni so ta"


def _tokenizer_corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    syllables = _SYLLABLES.split()
    made_up = ["".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(400)]
    vocabulary = _CAPTION_WORDS.split() + made_up
    return [" ".join(rng.choices(vocabulary, k=rng.randint(4, 16))) for _ in range(3000)]


def write_tiny_tokenizer(folder: Path, seed: int = 0) -> int:
    """Train a tiny sentencepiece unigram and save it as a T5 tokenizer. Returns its size."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_tokenizer_corpus(seed)),
        model_writer=model_bytes,
        vocab_size=TINY_VOCAB_SIZE,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model_bytes.getvalue())
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(len(processor))]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    with atomic_path(folder / "spiece.model") as tmp:
        tmp.write_bytes(model_bytes.getvalue())
    return len(tokenizer)


def write_tiny_models(
    folder: str | Path, seed: int = 0, text_dim: int = TINY_UMT5["d_model"]
) -> TinyModelPaths:
    """Write the tiny DiT experts, VAE, umT5 encoder and tokenizer into `folder`.

    `text_dim` widens the umT5 encoder's output (4096: embeddings that fit the 14B experts,
    for benchmarks that train the real-size DiT on a dataset cached with tiny models)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = TinyModelPaths(
        dit_high=folder / "wan2.2_t2v_high_noise_tiny_fp16.safetensors",
        dit_low=folder / "wan2.2_t2v_low_noise_tiny_fp16.safetensors",
        vae=folder / "wan_2.1_vae_tiny.safetensors",
        text_encoder=folder / "models_t5_umt5-tiny-enc-bf16.pth",
        tokenizer=folder / "umt5-tiny-tokenizer",
    )
    vocab_size = write_tiny_tokenizer(paths.tokenizer, seed)

    dit_layout = tiny_dit_layout()
    _write_safetensors(paths.dit_high, dit_layout, seed, torch.float16)
    _write_safetensors(paths.dit_low, dit_layout, seed + 1, torch.float16)
    _write_safetensors(paths.vae, tiny_vae_layout(), seed + 2, torch.bfloat16)
    with atomic_path(paths.text_encoder) as tmp:
        torch.save(
            _random_state(tiny_umt5_layout(vocab_size, text_dim), seed + 3, torch.bfloat16), tmp
        )
    return paths


def write_tiny_wan22_models(folder: str | Path, seed: int = 0) -> TinyWan22Paths:
    """Write the tiny I2V-A14B experts, TI2V-5B DiT and Wan 2.2 VAE into `folder`.

    Seeds differ from write_tiny_models' (seed + 10 ...), so no two files share weights.
    The parity fixtures in tests/fixtures/ were computed on the files of seed 0."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = TinyWan22Paths(
        i2v_high=folder / "wan2.2_i2v_high_noise_tiny_fp16.safetensors",
        i2v_low=folder / "wan2.2_i2v_low_noise_tiny_fp16.safetensors",
        ti2v=folder / "wan2.2_ti2v_tiny_fp16.safetensors",
        vae22=folder / "wan2.2_vae_tiny.safetensors",
    )
    i2v_layout = tiny_dit_layout("i2v")
    _write_safetensors(paths.i2v_high, i2v_layout, seed + 10, torch.float16)
    _write_safetensors(paths.i2v_low, i2v_layout, seed + 11, torch.float16)
    _write_safetensors(paths.ti2v, tiny_dit_layout("ti2v"), seed + 12, torch.float16)
    _write_safetensors(paths.vae22, tiny_vae22_layout(), seed + 13, torch.bfloat16)
    return paths
