"""Prompt building, caption post-checks, backups and review: the small pieces on their own."""

from __future__ import annotations

import pytest
from PIL import Image

from wanlora.captioning import (
    ENCODER_MAX_TOKENS,
    CaptionRejected,
    build_prompt,
    caption_prompt,
    check_caption,
    estimate_tokens,
    review_pairs,
)
from wanlora.captioning.openai_backend import OpenAIBackend
from wanlora.captioning.run import backup_path
from wanlora.errors import WanloraError
from wanlora.project_init import init_project

PHRASE = "cartoon screencap in rm artstyle"


def test_default_prompt_carries_the_recipe_rules_phrase_and_traits():
    prompt = build_prompt(PHRASE, "thick black outlines,  flat colours")
    assert f'exactly this phrase: "{PHRASE}"' in prompt
    assert "thick black outlines, flat colours" in prompt
    for rule in ("blind", "objective", "short", "purple prose", "mood", "clothing"):
        assert rule in prompt
    for topic in ("framing and shot type", "background", "lighting and time of day"):
        assert topic in prompt
    assert "{" not in build_prompt(PHRASE)  # generic traits fill the placeholder


def test_prompt_file_placeholders_and_missing_phrase(tmp_path):
    proj = init_project(tmp_path / "p", "wan22-t2v", "X_v1", "me", trigger=PHRASE)
    own = tmp_path / "prompt.txt"
    own.write_text('Caption it. Begin with {style_phrase}. JSON like {"a": 1} stays.\n')
    phrase, prompt = caption_prompt(proj, prompt_file=own)
    assert phrase == PHRASE
    assert prompt == f'Caption it. Begin with {PHRASE}. JSON like {{"a": 1}} stays.'
    assert caption_prompt(proj, style_tag="  other   tag ")[0] == "other tag"

    with pytest.raises(WanloraError, match="prompt file not found"):
        caption_prompt(proj, prompt_file=tmp_path / "missing.txt")
    bare = init_project(tmp_path / "q", "wan22-t2v", "X_v1", "me")
    with pytest.raises(WanloraError, match="--style-tag"):
        caption_prompt(bare)


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, but I can't help with that.",
        "I’m unable to describe people in images.",
        "Sorry, I cannot do that.",
        "As an AI, I cannot see images.",
        "I cannot identify this person.",
        "",
        "   \n ",
        f"{PHRASE}.",
    ],
)
def test_refusals_and_empty_answers_are_rejected(answer):
    with pytest.raises(CaptionRejected):
        check_caption(answer, PHRASE)


def test_caption_cleanup_and_phrase_handling():
    ok = check_caption(f"```\n{PHRASE.upper()}, a woman\n in a red coat.\n```", PHRASE)
    assert ok.text == f"{PHRASE}, a woman in a red coat." and not ok.warnings
    prefixed = check_caption('"A man stands in a field."', PHRASE)
    assert prefixed.text == f"{PHRASE}, A man stands in a field."
    assert len(prefixed.warnings) == 1


def test_token_estimate_and_length_limit():
    assert estimate_tokens("") == 1
    assert estimate_tokens("a" * 30) == 11
    fits = f"{PHRASE}, " + "a cat sits. " * 100  # ~1234 chars
    assert estimate_tokens(check_caption(fits, PHRASE).text) <= ENCODER_MAX_TOKENS
    with pytest.raises(CaptionRejected, match="too long"):
        check_caption(f"{PHRASE}, " + "a cat sits. " * 200, PHRASE)


def test_backup_names_never_clobber(tmp_path):
    caption = tmp_path / "a.txt"
    assert backup_path(caption).name == "a.txt.bak"
    (tmp_path / "a.txt.bak").write_text("x")
    (tmp_path / "a.txt.bak1").write_text("y")
    assert backup_path(caption).name == "a.txt.bak2"


def test_review_pairs_every_image_with_its_caption(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    (tmp_path / "a.txt").write_text("  caption a\n")
    (tmp_path / "notes.txt").write_text("not a caption")
    assert [(p.name, t) for p, t in review_pairs(tmp_path)] == [
        ("a.png", "caption a"),
        ("b.jpg", None),
    ]


def test_openai_needs_a_key_for_the_openai_api_only(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(WanloraError, match="set OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o")
    local = OpenAIBackend("llava", "http://127.0.0.1:11434/v1/")  # e.g. Ollama: no key needed
    assert local.url == "http://127.0.0.1:11434/v1/chat/completions"
    assert "Authorization" not in local._client.headers
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-abcdef")
    assert "sk-secret" not in repr(OpenAIBackend())
