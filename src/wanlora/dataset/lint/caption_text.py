"""What a caption's text says, for images and videos alike: its length in umT5 tokens and
where the trigger phrase stands."""

from __future__ import annotations

from pathlib import Path

from ..tokens import TEXT_TOKEN_LIMIT, TokenCounter


def caption_text_findings(
    caption: str, tokens: int, counter: TokenCounter, trigger: str | None, where: Path, row, report
) -> None:
    """Warn (on `report`, about `row`) when the caption is cut at 512 tokens or the trigger
    phrase is not its first words."""
    if tokens > TEXT_TOKEN_LIMIT:
        estimate = " (estimated)" if counter.is_estimate else ""
        report.warn(
            where,
            f"caption is {tokens} umT5 tokens{estimate}; the text encoder keeps the first "
            f"{TEXT_TOKEN_LIMIT} and drops the rest -- shorten it",
            row,
        )
    if trigger and not caption.lstrip("\ufeff").startswith(trigger):
        state = "is not at the start" if trigger in caption else "is missing"
        report.warn(
            where,
            f'trigger phrase "{trigger}" {state} -- the recipe starts every caption with it',
            row,
        )
