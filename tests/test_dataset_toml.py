"""musubi-tuner dataset.toml: the recipe's file loads unchanged; writing round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from wanlora.dataset.musubi_toml import dataset_toml_text, read_dataset_toml, write_dataset_toml
from wanlora.dataset.sources import DatasetEntry, dataset_sources
from wanlora.errors import WanloraError
from wanlora.project_init import init_project
from wanlora.recipes import load_project

# RECIPE.md's file, byte for byte (its paths are the guide's placeholders).
RECIPE_TOML = """\
[general]
resolution = [960, 960]
caption_extension = ".txt"
batch_size = 1
enable_bucket = true
bucket_no_upscale = false
[[datasets]]
image_directory = ".../dataset"
cache_directory = ".../dataset/cache"
num_repeats = 1
"""


def test_recipe_file_loads_unchanged(tmp_path):
    path = tmp_path / "dataset.toml"
    path.write_text(RECIPE_TOML)
    parsed = read_dataset_toml(path)
    (entry,) = parsed.datasets
    assert entry.resolution == (960, 960)
    assert entry.caption_extension == ".txt"
    assert (entry.batch_size, entry.num_repeats) == (1, 1)
    assert entry.enable_bucket is True and entry.bucket_no_upscale is False
    # relative paths are relative to the dataset.toml's folder
    assert entry.image_directory == tmp_path / ".../dataset"
    assert entry.cache_directory == tmp_path / ".../dataset/cache"
    assert parsed.ignored_keys == [
        "datasets[0].cache_directory (wanlora caches under the project's cache/ folder)"
    ]


def test_general_defaults_and_per_dataset_overrides(tmp_path):
    absolute = tmp_path / "elsewhere"
    path = tmp_path / "sub" / "dataset.toml"
    path.parent.mkdir()
    path.write_text(
        f"""
[general]
resolution = 512
caption_extension = ".caption"
enable_bucket = false
debug_dataset = true

[[datasets]]
image_directory = "{absolute.as_posix()}"
num_repeats = 3

[[datasets]]
image_directory = "../images"
resolution = [640, 384]
batch_size = 2
video_directory = "/ignored"
"""
    )
    parsed = read_dataset_toml(path)
    first, second = parsed.datasets
    assert first.image_directory == absolute
    assert (first.resolution, first.num_repeats, first.enable_bucket) == ((512, 512), 3, False)
    assert first.caption_extension == ".caption"
    assert second.image_directory == tmp_path / "images"
    assert (second.resolution, second.batch_size, second.num_repeats) == ((640, 384), 2, 1)
    assert second.caption_extension == ".caption" and second.enable_bucket is False
    assert parsed.ignored_keys == [
        "general.debug_dataset (not used by wanlora)",
        "datasets[1].video_directory (not used by wanlora)",
    ]


def test_missing_keys_take_the_projects_settings(tmp_path):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    (project.root / "dataset.toml").write_text('[[datasets]]\nimage_directory = "dataset"\n')
    config = (project.root / "wanlora.toml").read_text()
    (project.root / "wanlora.toml").write_text(
        config.replace(
            "[project]", '[dataset]\ndataset_toml = "dataset.toml"\nnum_repeats = 2\n\n[project]'
        )
    )
    sources = dataset_sources(load_project(project.root))
    (entry,) = sources.entries
    assert entry.image_directory == project.root / "dataset"
    assert (entry.resolution, entry.num_repeats, entry.enable_bucket) == ((960, 960), 2, True)
    assert sources.dataset_toml == project.root / "dataset.toml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[general\n", "invalid TOML"),
        ("[general]\nresolution = 960\n", r"no \[\[datasets\]\] entries"),
        ("[[datasets]]\nnum_repeats = 2\n", "has no image_directory"),
        ('[[datasets]]\nimage_directory = "a"\nresolution = [960, 500]\n', "multiple of 16"),
        ('[[datasets]]\nimage_directory = "a"\nresolution = "big"\n', r"not \[width, height\]"),
        ('[[datasets]]\nimage_directory = "a"\nnum_repeats = 0\n', "not a positive integer"),
        ('[[datasets]]\nimage_directory = "a"\nenable_bucket = "yes"\n', "not true/false"),
        ("[[datasets]]\nimage_directory = 5\n", "is not a path"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "dataset.toml"
    path.write_text(text)
    with pytest.raises(WanloraError, match=message) as info:
        read_dataset_toml(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value).strip()


def test_unreadable_files(tmp_path):
    with pytest.raises(WanloraError, match="not found"):
        read_dataset_toml(tmp_path / "nope.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('# caf\xe9\n[[datasets]]\nimage_directory = "a"\n'.encode("latin-1"))
    with pytest.raises(WanloraError, match="not UTF-8"):
        read_dataset_toml(latin)


def test_written_file_round_trips(tmp_path):
    entries = [
        DatasetEntry(tmp_path / "a b", cache_directory=tmp_path / "cache"),
        DatasetEntry(
            tmp_path / 'q"uote', num_repeats=4, resolution=(512, 768), bucket_no_upscale=True
        ),
    ]
    text = dataset_toml_text(entries, header="written by a test")
    assert text.startswith("# written by a test\n[general]\nresolution = [960, 960]\n")
    path = write_dataset_toml(tmp_path / "out" / "dataset.toml", text)
    parsed = read_dataset_toml(path)
    for got, want in zip(parsed.datasets, entries, strict=True):
        assert got.image_directory == want.image_directory
        for key in (
            "resolution",
            "caption_extension",
            "batch_size",
            "enable_bucket",
            "bucket_no_upscale",
            "num_repeats",
        ):
            assert getattr(got, key) == getattr(want, key), key
    assert parsed.datasets[0].cache_directory == tmp_path / "cache"


def test_write_never_replaces_silently(tmp_path):
    path = tmp_path / "dataset.toml"
    path.write_text("mine")
    with pytest.raises(WanloraError, match="already exists"):
        write_dataset_toml(path, "new")
    assert path.read_text() == "mine"
    write_dataset_toml(path, "new", overwrite=True)
    assert path.read_text() == "new"
    assert [p.name for p in Path(tmp_path).iterdir()] == ["dataset.toml"]


def test_project_dataset_toml_text_for_musubi(tmp_path):
    from wanlora.dataset.sources import project_dataset_toml_text

    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    text = project_dataset_toml_text(project)
    path = tmp_path / "dataset.toml"
    path.write_text(text)
    (entry,) = read_dataset_toml(path).datasets
    assert entry.image_directory == project.dataset_dir
    assert entry.cache_directory == project.cache_dir / "musubi"
    assert (entry.resolution, entry.enable_bucket, entry.num_repeats) == ((960, 960), True, 1)


def test_broken_tokenizer_falls_back_to_a_labelled_estimate(tmp_path):
    from wanlora.dataset.tokens import load_token_counter

    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text("{not json")
    counter = load_token_counter(folder)
    assert counter.is_estimate and "did not load" in counter.note and "\n" not in counter.note
    assert counter.count("a b c") >= 4
