"""Rules about captions: one caption file (present, readable, sized like a caption, within
the text encoder's tokens, starting with the trigger phrase), and captions across images,
looking for the signs of captions put on the wrong images (the recipe's warning about
ChatGPT numbering): numbering labels, another image's file name, identical text, and
near-identical text on images that do not look alike.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ...errors import WanloraError
from ..captions import read_caption
from ..tokens import TEXT_TOKEN_LIMIT, TokenCounter
from .caption_text import caption_text_findings
from .duplicates import MAX_IMAGES_FOR_CAPTION_PAIRS
from .files import symlink_outside
from .report import CheckedImage, CheckReport, ImageReport, name_list

CAPTION_MAX_BYTES = 64 * 1024
SIMILAR_CAPTION_RATIO = 0.9

NUMBER_LABEL = re.compile(
    r"^\W*(?:(?:image|img|caption|photo|picture|file)\s*(?:no\.?|#)?\s*(\d+)\b|(\d+)\s*[.):])",
    re.IGNORECASE,
)
WORD = re.compile(r"[^\s,;:()\[\]\"'<>]+")  # linear-time: no backtracking on long text


def check_caption(
    image_path: Path,
    caption_path: Path,
    folder: Path,
    counter: TokenCounter,
    trigger: str | None,
    image: ImageReport,
    report: CheckReport,
) -> str | None:
    """Report what is wrong with one image's caption file; its text, for the rules across
    captions (None when it is missing, unreadable or far too long to be a caption)."""
    if not caption_path.exists() and not caption_path.is_symlink():
        report.error(
            image_path,
            f"no caption file {caption_path.name} -- write one (or run `wanlora caption`)",
            image,
        )
        return None
    target = symlink_outside(caption_path, folder)
    if target is not None:
        report.warn(caption_path, f"symlink to {target}, outside the dataset folder", image)
    try:
        size = caption_path.stat().st_size
    except OSError:
        size = 0
    try:
        caption = read_caption(caption_path)
    except WanloraError as exc:
        report.error(caption_path, exc.what + (f" -- {exc.fix}" if exc.fix else ""), image)
        return None
    image.caption_chars = len(caption)
    if size > CAPTION_MAX_BYTES:
        report.error(
            caption_path,
            f"caption file is {_human_size(size)}, far beyond the text encoder's "
            f"{TEXT_TOKEN_LIMIT} tokens -- is it the right file? keep captions to a few sentences",
            image,
        )
        image.caption_tokens = counter.count(caption)
        return None  # not compared with other captions: far too long to be one
    if not caption:
        report.error(caption_path, "caption is empty -- describe the image in it", image)
        return caption
    tokens = counter.count(caption)
    image.caption_tokens = tokens
    if caption.startswith("\ufeff"):
        report.warn(
            caption_path,
            "starts with a UTF-8 byte-order mark, which the trainer keeps as text "
            "-- save it as UTF-8 without BOM",
            image,
        )
    caption_text_findings(caption, tokens, counter, trigger, caption_path, image, report)
    return caption


def _human_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"


def caption_mixups(
    checked: list[CheckedImage],
    trigger: str | None,
    alike: set[tuple[Path, Path]],
    report: CheckReport,
) -> None:
    """Signs of captions on the wrong images (the recipe's warning about ChatGPT numbering)."""
    with_caption = [c for c in checked if c.caption]
    names = {c.path.name.lower() for c in checked}
    for item in with_caption:
        label = NUMBER_LABEL.match(item.caption)
        if label:
            number = int(label.group(1) or label.group(2))
            own = re.findall(r"\d+", item.path.stem)
            mismatch = (
                f", but this image is number {int(own[-1])}"
                if own and int(own[-1]) != number
                else ""
            )
            report.warn(
                item.path,
                f'caption starts with a numbering label "{label.group(0).strip()}"{mismatch} '
                "-- remove the label (it is trained as text) and check the caption matches the image",
                item.report,
            )
        for word in WORD.findall(item.caption):
            mentioned = word.rstrip(".!?")
            if mentioned.lower() in names and mentioned.lower() != item.path.name.lower():
                report.warn(
                    item.path,
                    f"caption mentions another image's file name ({mentioned}) -- "
                    "is this caption on the wrong image?",
                    item.report,
                )

    by_text: dict[str, list[CheckedImage]] = {}
    for item in with_caption:
        by_text.setdefault(item.caption, []).append(item)
    for group in by_text.values():
        if len(group) > 1:
            report.warn(
                group[0].path,
                f"identical caption on {len(group)} images: {name_list([g.path for g in group])} "
                "-- each image needs its own caption",
                group[0].report,
            )

    if len(with_caption) > MAX_IMAGES_FOR_CAPTION_PAIRS:
        return
    bodies = [_caption_body(c.caption, trigger) for c in with_caption]
    for i, a in enumerate(with_caption):
        similar = []
        for j in range(i + 1, len(with_caption)):
            b = with_caption[j]
            if a.caption == b.caption or a.phash is None or b.phash is None:
                continue
            if (a.path, b.path) in alike:  # images that look alike may share words
                continue
            matcher = difflib.SequenceMatcher(None, bodies[i], bodies[j], autojunk=False)
            if (
                matcher.real_quick_ratio() >= SIMILAR_CAPTION_RATIO
                and matcher.quick_ratio() >= SIMILAR_CAPTION_RATIO
                and matcher.ratio() >= SIMILAR_CAPTION_RATIO
            ):
                similar.append(b.path)
        if similar:
            report.warn(
                a.path,
                f"caption of {a.path.name} is almost the same as that of {name_list(similar)} "
                f"(>= {SIMILAR_CAPTION_RATIO:.0%} of words) but the images look different "
                "-- is a caption on the wrong image?",
                a.report,
            )


def _caption_body(caption: str, trigger: str | None) -> list[str]:
    """The caption's words after the trigger phrase: compared word by word, not by letters."""
    text = caption.lower()
    if trigger and text.startswith(trigger.lower()):
        text = text[len(trigger) :]
    return re.findall(r"\w+", text)
