"""Caption length in umT5 tokens, the way the text encoder will see the caption.

With the project's tokenizer on disk (`models.tokenizer`, a folder loadable with
transformers' AutoTokenizer) the count is exact: the caption is cleaned like the reference
(ftfy, HTML unescaped twice, whitespace collapsed) and tokenised with the end-of-sequence
token. Without it, the count is an estimate (about 4 characters per token, at least 1.3
tokens per word) and is labelled as such.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ftfy

from ..models.registry import resolve_model_path
from ..recipes.project import Project

TEXT_TOKEN_LIMIT = 512
# Tokenising megabytes of text is slow and pointless: past this many characters the caption
# is far beyond the limit anyway, so only this prefix is counted.
MAX_CHARS_COUNTED = 20_000
ESTIMATE_NOTE = "estimate: tokenizer not downloaded"


def clean_caption(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


def estimate_tokens(text: str) -> int:
    return max(math.ceil(len(text) / 4), math.ceil(len(text.split()) * 1.3)) + 1


@dataclass
class TokenCounter:
    """Counts umT5 tokens; `tokenizer` None means an estimate."""

    tokenizer: Any = None
    note: str = ESTIMATE_NOTE

    @property
    def is_estimate(self) -> bool:
        return self.tokenizer is None

    def count(self, caption: str) -> int:
        text = clean_caption(caption[:MAX_CHARS_COUNTED])
        if self.tokenizer is None:
            return estimate_tokens(text)
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])


def load_token_counter(tokenizer_dir: Path | None) -> TokenCounter:
    """An exact counter if `tokenizer_dir` holds a tokenizer, else an estimating one."""
    if tokenizer_dir is None or not Path(tokenizer_dir).is_dir():
        return TokenCounter()
    # Imported here: transformers is heavy and only needed when a tokenizer is on disk.
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except Exception as exc:  # any broken download: fall back, but say why
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return TokenCounter(note=f"estimate: tokenizer at {tokenizer_dir} did not load ({reason})")
    return TokenCounter(tokenizer=tokenizer, note=f"umT5 tokenizer at {tokenizer_dir}")


def project_token_counter(project: Project) -> TokenCounter:
    folder = resolve_model_path(project.config.models.tokenizer, project.models_dir, project.root)
    return load_token_counter(folder)
