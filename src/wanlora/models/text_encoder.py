"""Load the umT5-xxl encoder .pth (original Wan layout) into transformers' UMT5EncoderModel.

The file is models_t5_umt5-xxl-enc-bf16.pth: a plain state dict saved with torch.save.
The config is read off the shapes (umT5-xxl: d_model 4096, d_ff 10240, 64 heads, 24
layers, vocab 256384, 32 relative-position buckets; umT5 has one relative attention bias
per layer), so the tiny test encoder takes the same path.

`TextEncoder.encode` reproduces the reference's text pipeline: clean, tokenize to 512 with
EOS, encode with the attention mask, trim each output to its real token count.

The DiT's side of the same contract: it reads every caption embedding zero-padded to
TEXT_LEN rows (`pad_context`), in training and in sampling alike.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import ftfy
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel

from wanlora.errors import WanloraError
from wanlora.models.assign import assign_parameter, build_on_meta, check_fully_loaded
from wanlora.models.files import load_torch_state_dict, require_kind

TEXT_LENGTH = 512  # tokens per prompt (the tokenizer pads and truncates to this)
TEXT_LEN = TEXT_LENGTH  # the DiT's text length: every context is zero-padded to this many rows
# umT5 relative-position settings (fixed by the architecture, not stored as tensors).
RELATIVE_MAX_DISTANCE = 128

TOP_LEVEL_MODULES = {
    "token_embedding": "shared",
    "norm": "encoder.final_layer_norm",
}
# Original module inside `blocks.N.` -> transformers module inside `encoder.block.N.`.
BLOCK_MODULES = {
    "norm1": "layer.0.layer_norm",
    "attn.q": "layer.0.SelfAttention.q",
    "attn.k": "layer.0.SelfAttention.k",
    "attn.v": "layer.0.SelfAttention.v",
    "attn.o": "layer.0.SelfAttention.o",
    "pos_embedding.embedding": "layer.0.SelfAttention.relative_attention_bias",
    "norm2": "layer.1.layer_norm",
    # Wan's gated FFN: fc1(x) * gelu_tanh(gate(x)); transformers: wi_1(x) * gelu_new(wi_0(x)).
    "ffn.gate.0": "layer.1.DenseReluDense.wi_0",
    "ffn.fc1": "layer.1.DenseReluDense.wi_1",
    "ffn.fc2": "layer.1.DenseReluDense.wo",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.weight$")
_OUR_BLOCK_KEY = re.compile(r"^encoder\.block\.(\d+)\.(.+)\.weight$")


def wan_t5_key_to_transformers(name: str) -> str | None:
    """`blocks.3.attn.q.weight` -> `encoder.block.3.layer.0.SelfAttention.q.weight`."""
    if match := _BLOCK_KEY.match(name):
        index, module = match.groups()
        if module in BLOCK_MODULES:
            return f"encoder.block.{index}.{BLOCK_MODULES[module]}.weight"
        return None
    module, _, leaf = name.rpartition(".")
    if module in TOP_LEVEL_MODULES and leaf == "weight":
        return f"{TOP_LEVEL_MODULES[module]}.weight"
    return None


def transformers_t5_key_to_wan(name: str) -> str | None:
    if match := _OUR_BLOCK_KEY.match(name):
        index, module = match.groups()
        for original, ours in BLOCK_MODULES.items():
            if module == ours:
                return f"blocks.{index}.{original}.weight"
        return None
    for original, ours in TOP_LEVEL_MODULES.items():
        if name == f"{ours}.weight":
            return f"{original}.weight"
    return None


def infer_umt5_config(path: Path, shapes: dict[str, tuple[int, ...]]) -> UMT5Config:
    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise WanloraError(f"{path} is missing {name}; the file is incomplete")
        return shapes[name]

    vocab_size, d_model = shape("token_embedding.weight")
    num_buckets, num_heads = shape("blocks.0.pos_embedding.embedding.weight")
    inner_dim = shape("blocks.0.attn.q.weight")[0]
    num_layers = len({int(m.group(1)) for n in shapes if (m := _BLOCK_KEY.match(n))})
    return UMT5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=inner_dim // num_heads,
        d_ff=shape("blocks.0.ffn.fc1.weight")[0],
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=RELATIVE_MAX_DISTANCE,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
    )


def load_umt5_encoder(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> UMT5EncoderModel:
    """The .pth state dict in a frozen UMT5EncoderModel (tensors assigned one at a time)."""
    path = Path(path)
    state = load_torch_state_dict(path)
    require_kind(path, set(state), "text_encoder")
    config = infer_umt5_config(path, {n: tuple(t.shape) for n, t in state.items()})
    model = build_on_meta(lambda: UMT5EncoderModel(config))
    model_names = {n for n, _ in model.named_parameters()}
    unexpected = sorted(
        n for n in state if (m := wan_t5_key_to_transformers(n)) is None or m not in model_names
    )
    if unexpected:
        raise WanloraError(
            f"{path} has {len(unexpected)} tensor(s) the umT5 encoder does not have: "
            + ", ".join(unexpected[:5]),
            "use models_t5_umt5-xxl-enc-bf16.pth",
        )
    device = torch.device(device)
    for name in list(state):
        tensor = state.pop(name).to(device=device, dtype=dtype)
        assign_parameter(model, wan_t5_key_to_transformers(name), tensor, path)  # type: ignore[arg-type]
    # The encoder's embedding is the same tensor as `shared` (tied in transformers).
    model.encoder.embed_tokens.weight = model.shared.weight
    model.to(device)
    check_fully_loaded(model, path)
    model.eval()
    return model


def clean_text(text: str) -> str:
    """The reference's prompt cleaning: ftfy, HTML unescape twice, collapse whitespace."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The google/umt5-xxl tokenizer folder (or the tiny test one), offline."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WanloraError(
            f"Tokenizer folder {folder} does not exist",
            "run `wanlora download` or fix the tokenizer path in wanlora.toml",
        )
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise WanloraError(
            f"{folder} is not a usable tokenizer folder: {exc}",
            "download google/umt5-xxl's spiece.model and tokenizer_config.json into it",
        ) from None


def pad_context(context: torch.Tensor, length: int = TEXT_LEN) -> torch.Tensor:
    """(L, D) -> (length, D), zeros below the real tokens, as the reference's DiT does."""
    padded = context.new_zeros((length, context.shape[1]))
    padded[: min(length, context.shape[0])] = context[:length]
    return padded


class TextEncoder:
    """umT5 encoder + tokenizer: prompts -> variable-length embeddings, as the reference."""

    def __init__(self, model: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase):
        self.model = model
        self.tokenizer = tokenizer

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            [clean_text(p) for p in prompts],
            padding="max_length",
            truncation=True,
            max_length=TEXT_LENGTH,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        """One (L_i, dim) tensor per prompt, L_i = its token count including EOS."""
        device = next(self.model.parameters()).device
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(device), mask.to(device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        lengths = mask.gt(0).sum(dim=1).tolist()
        return [h[:n] for h, n in zip(hidden, lengths, strict=True)]


def load_text_encoder(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase | str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> TextEncoder:
    """The umT5 .pth + a tokenizer (object or folder) as a TextEncoder."""
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    model = load_umt5_encoder(path, dtype=dtype, device=device)
    if len(tokenizer) > model.config.vocab_size:
        raise WanloraError(
            f"the tokenizer has {len(tokenizer)} tokens but {path} only {model.config.vocab_size}",
            "use the google/umt5-xxl tokenizer with the umT5-xxl encoder",
        )
    return TextEncoder(model, tokenizer)
