"""Post-checks on a model's caption: cleaned up, not a refusal, not empty, phrase first, fits.

`check_caption` returns the caption to write (with the style phrase put first if the model
left it out, noted as a warning) or raises `CaptionRejected`, which the caller answers with a
retry.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import WanloraError

# The umT5 text encoder reads at most 512 tokens; the rest of a longer caption is cut off.
ENCODER_MAX_TOKENS = 512

# Openings of a model declining the task (apostrophes normalised to ').
_REFUSAL = re.compile(
    r"^(i'm sorry|i am sorry|sorry[,.!]|i apologi[sz]e|i can't|i cannot|i can not|"
    r"i'm unable|i am unable|i'm not able|i am not able|i won't|i will not|"
    r"as an ai\b|unfortunately,? i)",
    re.IGNORECASE,
)


_QUOTES = {'"': '"', "'": "'", "“": "”"}


class CaptionRejected(WanloraError):
    """The model's answer is not a usable caption (empty, a refusal, too long)."""


@dataclass
class CheckedCaption:
    text: str
    warnings: list[str] = field(default_factory=list)


def estimate_tokens(text: str) -> int:
    """An upper-side estimate of the umT5 token count, without the tokenizer.

    umT5's SentencePiece vocabulary averages about 4 characters per token on English prose;
    we count one token per 3 characters (a margin for names, numbers and rarer words, which
    split into more pieces) plus one for the end-of-text token. A caption that passes is
    therefore very likely to fit; the recipe's captions are far below the limit anyway.
    """
    return math.ceil(len(text) / 3) + 1


def clean_caption(raw: str) -> str:
    """One paragraph of plain text: no code fences, wrapping quotes or line breaks."""
    text = raw.strip()
    text = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", text)
    text = re.sub(r"^(caption|answer)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = " ".join(text.split())
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def check_caption(raw: str | None, style_phrase: str) -> CheckedCaption:
    text = clean_caption(raw or "")
    if not text:
        raise CaptionRejected("the model answered with an empty caption")
    if _REFUSAL.match(text.replace("’", "'")):
        raise CaptionRejected(f"the model declined: {text[:80]!r}")

    warnings: list[str] = []
    if text.lower().startswith(style_phrase.lower()):
        # keep the user's exact spelling of the phrase
        text = style_phrase + text[len(style_phrase) :]
    else:
        text = f"{style_phrase}, {text}"
        warnings.append("the model left out the style phrase; it was put first")
    if not text[len(style_phrase) :].strip(" ,.;:"):
        raise CaptionRejected("the model answered with the style phrase only")

    tokens = estimate_tokens(text)
    if tokens > ENCODER_MAX_TOKENS:
        raise CaptionRejected(
            f"the caption is too long (about {tokens} tokens; the text encoder reads "
            f"{ENCODER_MAX_TOKENS})"
        )
    return CheckedCaption(text, warnings)
