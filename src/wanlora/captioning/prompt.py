"""The captioning prompt: the recipe's rules for one image, with the project's style phrase.

A template may contain two placeholders, replaced literally (other braces are left alone, so
a user's own prompt file needs no escaping):
  {style_phrase}  the fixed phrase every caption starts with
  {style_traits}  the style's visual traits, or a generic list when none were given
"""

from __future__ import annotations

from pathlib import Path

from ..errors import WanloraError

# The recipe's captioning rules (RECIPE.md, "Dataset and captions"), as one instruction.
DEFAULT_TEMPLATE = """\
Write one training caption for the image you are shown. The caption is read by a blind \
person who must picture the image exactly from your words.

Rules:
- Start the caption with exactly this phrase: "{style_phrase}". Nothing comes before it.
- Right after the phrase, describe the visual traits of this style as they appear in the \
image: {style_traits}.
- Then describe, in this order: the style of the image; the subject's appearance; their \
clothing; what they are doing; the framing and shot type (close-up, medium shot, full body, \
wide shot, camera angle); the background; the lighting and time of day.
- Be objective, neutral and concrete. Describe only what is visible.
- Use short, plain sentences. No purple prose, no metaphors, no mood or emotion words \
(such as serene, mysterious, beautiful, dramatic, evocative).
- Do not guess names or what happens outside the frame.
- Write one paragraph of plain text, at most about 150 words. No lists, no headings, no \
quotation marks, no preamble such as "This image shows".

Reply with the caption only."""

GENERIC_TRAITS = "line work, colours, shading, texture and rendering"


def resolve_style_phrase(configured: str | None, override: str | None) -> str:
    """The phrase captions start with: `--style-tag` wins over the project's `trigger`."""
    phrase = (override if override is not None else configured) or ""
    phrase = " ".join(phrase.split())
    if not phrase:
        raise WanloraError(
            "no style phrase to start the captions with",
            'set trigger = "..." under [project] in wanlora.toml or pass --style-tag "..."',
        )
    return phrase


def load_template(prompt_file: str | Path | None) -> str:
    """The user's prompt file, or the recipe's default template."""
    if prompt_file is None:
        return DEFAULT_TEMPLATE
    path = Path(prompt_file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WanloraError(
            f"{path}: prompt file not found", "check the --prompt-file path"
        ) from None
    except UnicodeDecodeError:
        raise WanloraError(f"{path}: prompt file is not UTF-8 text", "save it as UTF-8") from None
    if not text.strip():
        raise WanloraError(f"{path}: prompt file is empty", "write your instructions into it")
    return text.strip()


def build_prompt(
    style_phrase: str, style_traits: str | None = None, template: str | None = None
) -> str:
    """Fill the template's placeholders."""
    template = DEFAULT_TEMPLATE if template is None else template
    traits = " ".join((style_traits or "").split()) or GENERIC_TRAITS
    return template.replace("{style_phrase}", style_phrase).replace("{style_traits}", traits)
