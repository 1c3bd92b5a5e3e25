"""Per-image captions with the recipe's rules (`wanlora caption`).

The local backend (torch + transformers) lives in `wanlora.captioning.local_backend` and is
imported only when used.
"""

from .checks import ENCODER_MAX_TOKENS, CaptionRejected, check_caption, estimate_tokens
from .openai_backend import OpenAIBackend
from .prompt import DEFAULT_TEMPLATE, build_prompt, load_template, resolve_style_phrase
from .run import CaptionBackend, CaptionSummary, caption_dataset, caption_prompt, review_pairs

__all__ = [
    "DEFAULT_TEMPLATE",
    "ENCODER_MAX_TOKENS",
    "CaptionBackend",
    "CaptionRejected",
    "CaptionSummary",
    "OpenAIBackend",
    "build_prompt",
    "caption_dataset",
    "caption_prompt",
    "check_caption",
    "estimate_tokens",
    "load_template",
    "resolve_style_phrase",
    "review_pairs",
]
