"""`wanlora check`: every bad input gives one clear line naming the file; nothing is modified."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli_run import run_cli
from wanlora.cli import app
from wanlora.dataset.lint import check_dataset, project_for_check
from wanlora.dataset.tokens import TokenCounter, clean_caption, load_token_counter
from wanlora.project_init import init_project
from wanlora.recipes import load_project

TRIGGER = "rm style"
WORDS = [
    "woman",
    "man",
    "dog",
    "cat",
    "tree",
    "car",
    "house",
    "river",
    "mountain",
    "street",
    "city",
    "beach",
    "forest",
    "bridge",
    "boat",
    "train",
    "lamp",
    "chair",
    "table",
    "window",
    "door",
    "garden",
    "field",
    "road",
    "sky",
    "cloud",
    "flower",
    "bird",
]


def noise_image(path: Path, width: int = 64, height: int = 64, seed: int = 0, mode="RGB") -> Path:
    rng = np.random.default_rng(seed)
    # smooth blocks rather than pixel noise: distinct perceptual hashes, small files
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    pixels = cv2.resize(blocks, (width, height), interpolation=cv2.INTER_NEAREST)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def caption_for(index: int) -> str:
    picks = random.Random(index).sample(WORDS, 6)
    return f"{TRIGGER}, a {picks[0]} and a {picks[1]} by the {picks[2]}, {' '.join(picks[3:])}."


def make_project(tmp_path: Path, count: int = 18, trigger: str | None = TRIGGER, resolution=64):
    project = init_project(tmp_path / "proj", "wan22-t2v", "Test_v1", "me", trigger=trigger)
    with open(project.config_file, "a") as f:
        f.write(f"\n[dataset]\nresolution = [{resolution}, {resolution}]\n")
    for index in range(count):
        noise_image(project.dataset_dir / f"img_{index:02d}.png", seed=index)
        (project.dataset_dir / f"img_{index:02d}.txt").write_text(caption_for(index))
    return load_project(project.root)


def messages(findings, name: str) -> list[str]:
    return [f.message for f in findings if Path(f.path).name == name]


def one_message(findings, name: str, needle: str) -> str:
    found = [m for m in messages(findings, name) if needle in m]
    assert len(found) == 1, (name, needle, [(f.path, f.message) for f in findings])
    assert "\n" not in found[0]
    return found[0]


def tree_fingerprint(root: Path) -> dict[str, tuple]:
    result = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        data = b"" if path.is_dir() or path.is_symlink() else path.read_bytes()
        result[str(path)] = (stat.st_mtime_ns, stat.st_mode, hashlib.sha256(data).hexdigest())
    return result


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A tiny umT5-style tokenizer folder, trained offline on a few sentences."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    model = io.BytesIO()
    sentences = [caption_for(i) for i in range(18)] * 5
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=100,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model.getvalue())
    T5Tokenizer(vocab_file=str(folder / "spiece.model"), extra_ids=0).save_pretrained(folder)
    return folder


def test_clean_dataset_passes_and_is_not_modified(tmp_path):
    project = make_project(tmp_path)
    before = tree_fingerprint(project.root)
    report = check_dataset(project)
    assert tree_fingerprint(project.root) == before
    assert report.errors == [] and report.warnings == [], report.warnings
    assert len(report.images) == 18
    data = json.loads(report.to_json())
    first = data["images"][0]
    assert first["path"] == str(project.dataset_dir / "img_00.png")
    assert (first["width"], first["height"], first["bucket"]) == (64, 64, [64, 64])
    assert data["errors"] == [] and data["warnings"] == []
    assert (
        report.tokens_are_estimate
        and "estimate: tokenizer not downloaded" in report.token_count_source
    )


def test_token_counts_use_the_projects_tokenizer(tmp_path, tiny_tokenizer):
    project = make_project(tmp_path, count=2)
    (project.dataset_dir / "img_01.txt").write_text(TRIGGER + ", " + "woman dog tree " * 300)
    target = project.models_dir / "google/umt5-xxl"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(tiny_tokenizer, target)  # where the registry id resolves
    report = check_dataset(project)
    assert not report.tokens_are_estimate and str(target) in report.token_count_source
    counter = load_token_counter(tiny_tokenizer)
    expected = len(counter.tokenizer(clean_caption(caption_for(0)))["input_ids"])
    assert report.images[0].caption_tokens == expected
    message = one_message(report.warnings, "img_01.txt", "umT5 tokens")
    assert "keeps the first 512" in message and "estimated" not in message


def test_long_caption_estimate_is_labelled(tmp_path):
    project = make_project(tmp_path, count=1)
    (project.dataset_dir / "img_00.txt").write_text(TRIGGER + " " + "word " * 800)
    report = check_dataset(project)
    assert "(estimated)" in one_message(report.warnings, "img_00.txt", "umT5 tokens")


def test_no_images_is_an_error(tmp_path):
    project = make_project(tmp_path, count=0)
    report = check_dataset(project)
    assert any("no images" in e.message for e in report.errors)


def test_pairing_and_empty_captions(tmp_path):
    project = make_project(tmp_path, count=4)
    (project.dataset_dir / "img_00.txt").unlink()
    (project.dataset_dir / "img_01.txt").write_text("  \n")
    (project.dataset_dir / "stray.txt").write_text("a caption whose image is gone")
    report = check_dataset(project)
    one_message(report.errors, "img_00.png", "no caption file img_00.txt")
    one_message(report.errors, "img_01.txt", "caption is empty")
    one_message(report.errors, "stray.txt", "caption without an image")


def test_undecodable_images(tmp_path):
    project = make_project(tmp_path, count=2)
    good = (project.dataset_dir / "img_00.png").read_bytes()
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        jpeg, "JPEG"
    )
    (project.dataset_dir / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (project.dataset_dir / "empty.png").write_bytes(b"")
    (project.dataset_dir / "half.png").write_bytes(good[:60])
    for name in ("cut", "empty", "half"):
        (project.dataset_dir / f"{name}.txt").write_text(caption_for(5))
    report = check_dataset(project)
    assert "truncated" in one_message(report.errors, "cut.jpg", "cannot be decoded")
    one_message(report.errors, "empty.png", "not a readable image")
    assert messages(report.errors, "half.png")
    assert len(report.images) == 5  # listed, with no size


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_is_a_clear_error(tmp_path):
    project = make_project(tmp_path, count=1)
    (project.dataset_dir / "bomb.png").write_bytes(png_header_only(50_000, 50_000))
    (project.dataset_dir / "bomb.txt").write_text(caption_for(3))
    report = check_dataset(project)
    assert "89 megapixels" in one_message(report.errors, "bomb.png", "too large to decode safely")


def test_colour_modes_say_what_happens(tmp_path):
    project = make_project(tmp_path, count=0)
    folder = project.dataset_dir
    noise_image(folder / "cmyk.jpg", seed=1, mode="CMYK")
    noise_image(folder / "alpha.png", seed=2, mode="RGBA")
    grey16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    cv2.imwrite(str(folder / "rgb16.png"), np.full((64, 64, 3), 40000, np.uint16))
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green")]
    frames[0].save(folder / "anim.png", save_all=True, append_images=frames[1:])
    noise_image(folder / "old.gif", seed=4, mode="P")
    for name in ("cmyk", "alpha", "grey16", "rgb16", "anim", "old"):
        (folder / f"{name}.txt").write_text(caption_for(len(name)) + name)
    report = check_dataset(project)
    assert "colours may shift" in one_message(report.warnings, "cmyk.jpg", "is CMYK")
    assert "often black" in one_message(report.warnings, "alpha.png", "alpha channel")
    assert "almost white" in one_message(report.warnings, "grey16.png", "16-bit")
    assert "8-bit RGB" in one_message(report.warnings, "rgb16.png", "16 bits per channel")
    assert "only the first frame" in one_message(report.warnings, "anim.png", "animated (3 frames)")
    one_message(report.warnings, "old.gif", "not read by the trainer")
    one_message(report.errors, "old.txt", "caption without an image")
    assert not [e for e in report.errors if not e.path.endswith("old.txt")]


def test_exif_rotation_warns_and_keeps_parity(tmp_path):
    project = make_project(tmp_path, count=1)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (96, 64), "red").save(project.dataset_dir / "phone.jpg", exif=exif)
    (project.dataset_dir / "phone.txt").write_text(caption_for(9))
    report = check_dataset(project)
    message = one_message(report.warnings, "phone.jpg", "EXIF orientation 6")
    assert "NOT applied" in message and "96x64" in message
    row = next(i for i in report.images if i.path.endswith("phone.jpg"))
    assert (row.width, row.height) == (96, 64)  # as stored: landscape bucket
    assert row.bucket[0] > row.bucket[1]


def test_caption_encodings_and_size(tmp_path):
    project = make_project(tmp_path, count=3)
    (project.dataset_dir / "img_00.txt").write_bytes(f"{TRIGGER}, café crème".encode("latin-1"))
    (project.dataset_dir / "img_01.txt").write_bytes(b"\xef\xbb\xbf" + caption_for(1).encode())
    (project.dataset_dir / "img_02.txt").write_text(TRIGGER + " " + "x" * 10_500_000)
    start = time.perf_counter()
    report = check_dataset(project)
    assert time.perf_counter() - start < 10
    assert "Latin-1" in one_message(report.errors, "img_00.txt", "not UTF-8")
    one_message(report.warnings, "img_01.txt", "byte-order mark")
    assert "10.5 MB" in one_message(report.errors, "img_02.txt", "caption file is")


def test_symlinks_loops_folders_and_outside_paths(tmp_path):
    project = make_project(tmp_path, count=2)
    folder = project.dataset_dir
    os.symlink(folder / "loop_b.png", folder / "loop_a.png")
    os.symlink(folder / "loop_a.png", folder / "loop_b.png")
    os.symlink(tmp_path / "missing.png", folder / "gone.png")
    (folder / "album.jpg").mkdir()
    outside = noise_image(tmp_path / "outside.png", seed=40)
    os.symlink(outside, folder / "linked.png")
    (folder / "linked.txt").write_text(caption_for(40))
    report = check_dataset(project)
    one_message(report.errors, "loop_a.png", "symlink loop")
    one_message(report.errors, "gone.png", "broken symlink")
    one_message(report.warnings, "album.jpg", "folder named like an image")
    one_message(report.warnings, "linked.png", "outside the dataset folder")
    assert len(report.images) == 3


def test_sizes_upscaling_and_buckets(tmp_path):
    project = make_project(tmp_path, count=0, resolution=960)
    noise_image(project.dataset_dir / "tiny.png", 200, 200, seed=1)
    noise_image(project.dataset_dir / "soft.png", 560, 560, seed=2)
    noise_image(project.dataset_dir / "fine.png", 1920, 1080, seed=3)
    for index, name in enumerate(("tiny", "soft", "fine")):
        (project.dataset_dir / f"{name}.txt").write_text(caption_for(index))
    report = check_dataset(project)
    assert "480x480" in one_message(report.errors, "tiny.png", "too small")
    one_message(report.warnings, "soft.png", "upscaled 1.7x")
    assert not messages(report.errors + report.warnings, "fine.png")
    assert [i.bucket for i in report.images if i.path.endswith("fine.png")] == [[1280, 720]]


def test_duplicates_trigger_and_wrong_caption_signs(tmp_path):
    project = make_project(tmp_path, count=6)
    folder = project.dataset_dir
    Image.open(folder / "img_00.png").resize((80, 80)).save(folder / "img_00_copy.jpg", quality=90)
    (folder / "img_00_copy.txt").write_text(caption_for(30))
    (folder / "img_01.txt").write_text("a cat on a sofa, " + TRIGGER)
    (folder / "img_02.txt").write_text("Image 5: " + caption_for(2))
    (folder / "img_03.txt").write_text(caption_for(3) + " Same as img_04.png.")
    (folder / "img_05.txt").write_text(caption_for(4)[:-1] + "!")  # near copy of img_04's
    report = check_dataset(project)
    assert "img_00_copy.jpg" in one_message(report.warnings, "img_00.png", "near-duplicate")
    one_message(report.warnings, "img_01.txt", '"rm style" is not at the start')
    assert "number 2" in one_message(report.warnings, "img_02.png", 'numbering label "Image 5')
    one_message(report.warnings, "img_03.png", "another image's file name (img_04.png)")
    one_message(report.warnings, "img_04.png", "almost the same as that of img_05.png")
    one_message(report.warnings, "dataset", "7 images; the recipe uses exactly 18")
    (folder / "img_05.txt").write_text(caption_for(4))
    report = check_dataset(project)
    one_message(report.warnings, "img_04.png", "identical caption on 2 images")


def test_thousands_of_images_finish_fast(tmp_path):
    project = make_project(tmp_path, count=0)
    pixels = np.zeros((16, 16, 3), np.uint8)
    for index in range(2000):
        pixels[:] = index % 251
        pixels[: index % 16] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(project.dataset_dir / f"{index:04d}.png", compress_level=0)
        (project.dataset_dir / f"{index:04d}.txt").write_text(f"{TRIGGER}, picture {index}")
    start = time.perf_counter()
    report = check_dataset(project, TokenCounter())
    elapsed = time.perf_counter() - start
    assert len(report.images) == 2000
    one_message(report.warnings, "dataset", "2000 images; the recipe uses exactly 18")
    assert elapsed < 30, elapsed


def test_dataset_toml_problems_are_reported(tmp_path):
    project = make_project(tmp_path, count=18)
    elsewhere = tmp_path / "shared"
    elsewhere.mkdir()
    for index in range(18):
        os.rename(project.dataset_dir / f"img_{index:02d}.png", elsewhere / f"img_{index:02d}.png")
        os.rename(project.dataset_dir / f"img_{index:02d}.txt", elsewhere / f"img_{index:02d}.txt")
    (project.root / "dataset.toml").write_text(
        f'[general]\nresolution = [64, 64]\n[[datasets]]\nimage_directory = "{elsewhere}"\n'
        'cache_directory = "cache"\n'
    )
    project.config_file.write_text(
        project.config_file.read_text().replace(
            "[dataset]\n", '[dataset]\ndataset_toml = "dataset.toml"\n'
        )
    )
    report = check_dataset(load_project(project.root))
    assert report.errors == []
    one_message(report.warnings, "dataset.toml", "datasets[0].cache_directory")
    one_message(report.warnings, "shared", "outside the project folder")
    (project.root / "dataset.toml").write_text("[[datasets]]\n")
    report = check_dataset(load_project(project.root))
    assert "has no image_directory" in one_message(report.errors, "wanlora.toml", "dataset.toml")


def test_cli_table_json_and_exit_codes(tmp_path):
    project = make_project(tmp_path, count=18)
    runner = CliRunner()
    result = runner.invoke(app, ["check", str(project.root)])
    assert result.exit_code == 0, result.output
    assert "img_00.png" in result.output and "ready to train" in result.output
    (project.dataset_dir / "img_03.txt").unlink()
    result = runner.invoke(app, ["check", str(project.root), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["errors"][0]["path"].endswith("img_03.png")
    assert len(data["images"]) == 18 and data["images"][0]["bucket"] == [64, 64]


def test_cli_checks_a_plain_folder_and_reports_bad_dirs_in_one_line(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    noise_image(folder / "a.png", 960, 960)
    (folder / "a.txt").write_text("a caption")
    project = project_for_check(folder)
    assert project.dataset_dir == folder.resolve()
    result = CliRunner().invoke(app, ["check", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["images"][0]["bucket"] == [960, 960]
    done = run_cli("check", str(tmp_path / "nope"), timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "error:" in done.stderr and "nope" in done.stderr
