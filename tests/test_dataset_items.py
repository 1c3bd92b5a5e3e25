"""Training items (load_items) and the order they are trained in (epoch_batches)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wanlora.dataset.items import DatasetItem, load_items
from wanlora.dataset.order import epoch_batches, steps_per_epoch
from wanlora.errors import WanloraError
from wanlora.project_init import init_project
from wanlora.recipes import load_project


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def make_project(tmp_path: Path, sizes, extra_toml: str = ""):
    project = init_project(tmp_path / "proj", "wan22-t2v", "Test_v1", "me")
    for index, (w, h) in enumerate(sizes):
        write_image(project.dataset_dir / f"img_{index:02d}.png", w, h, seed=index)
        (project.dataset_dir / f"img_{index:02d}.txt").write_text(f"  caption {index}\n")
    if extra_toml:
        with open(project.config_file, "a") as f:
            f.write(extra_toml)
    return load_project(project.root)


def test_load_items_reads_captions_sizes_and_buckets(tmp_path):
    project = make_project(tmp_path, [(1024, 768), (640, 480), (300, 1200)])
    items = load_items(project)
    assert [i.image_path.name for i in items] == ["img_00.png", "img_01.png", "img_02.png"]
    assert [i.caption for i in items] == ["caption 0", "caption 1", "caption 2"]  # stripped
    assert [i.original_size for i in items] == [(1024, 768), (640, 480), (300, 1200)]
    assert [i.bucket for i in items] == [(1104, 832), (1104, 832), (480, 1920)]
    assert all(i.num_repeats == 1 for i in items)


def test_dataset_toml_with_repeats_and_two_folders(tmp_path):
    project = make_project(tmp_path, [(64, 64)])
    other = project.root / "more"
    other.mkdir()
    write_image(other / "b.jpg", 128, 64)
    (other / "b.txt").write_text("b")
    (project.root / "dataset.toml").write_text(
        '[general]\nresolution = [64, 64]\n[[datasets]]\nimage_directory = "dataset"\nnum_repeats = 3\n'
        f'[[datasets]]\nimage_directory = "{other.as_posix()}"\n'
    )
    text = project.config_file.read_text().replace(
        "[project]", '[dataset]\ndataset_toml = "dataset.toml"\n\n[project]'
    )
    project.config_file.write_text(text)
    items = load_items(load_project(project.root))
    assert [(i.image_path.name, i.num_repeats, i.bucket) for i in items] == [
        ("img_00.png", 3, (64, 64)),
        ("b.jpg", 1, (80, 48)),
    ]


def test_missing_caption_is_a_hard_error(tmp_path):
    project = make_project(tmp_path, [(64, 64), (64, 64)])
    (project.dataset_dir / "img_01.txt").unlink()
    with pytest.raises(WanloraError, match=r"img_01.png: no caption file img_01.txt"):
        load_items(project)


def test_no_images_and_missing_folder(tmp_path):
    project = make_project(tmp_path, [])
    with pytest.raises(WanloraError, match="no images"):
        load_items(project)
    project.dataset_dir.rmdir()
    with pytest.raises(WanloraError, match="dataset folder does not exist"):
        load_items(project)


def test_non_utf8_caption_is_an_error(tmp_path):
    project = make_project(tmp_path, [(64, 64)])
    (project.dataset_dir / "img_00.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(WanloraError, match="not UTF-8 text.*Latin-1"):
        load_items(project)


def item(bucket, repeats=1) -> DatasetItem:
    return DatasetItem(Path("x.png"), "c", bucket, bucket, repeats)


def test_steps_per_epoch_matches_the_recipe():
    items = [item((960, 960))] * 10 + [item((1104, 832))] * 8
    assert steps_per_epoch(items, 1) == 18  # 18 images x 1 repeat, batch 1
    assert steps_per_epoch(items, 1) * 100 == 1800
    assert steps_per_epoch([item((960, 960), repeats=2)] * 3, 1) == 6
    # batch > 1: per-bucket batches (musubi): ceil(10/4) + ceil(8/4) = 5 (not ceil(18/4) = 5)
    assert steps_per_epoch(items, 4) == 5
    assert steps_per_epoch(items[:9] + items[10:17], 4) == math.ceil(9 / 4) + math.ceil(7 / 4)


def test_epoch_batches_group_buckets_and_are_deterministic():
    items = [item((960, 960)), item((1104, 832), repeats=2), item((960, 960)), item((480, 1920))]
    batches = epoch_batches(items, 2, epoch=1, seed=5)
    assert batches == epoch_batches(items, 2, epoch=1, seed=5)
    assert sorted(i for b in batches for i in b) == [0, 1, 1, 2, 3]
    for batch in batches:
        assert len({items[i].bucket for i in batch}) == 1
    assert len(batches) == steps_per_epoch(items, 2) == 3
    orders = {tuple(map(tuple, epoch_batches(items, 1, epoch=e, seed=5))) for e in range(1, 12)}
    assert len(orders) > 1  # reshuffled as epochs change


def test_epoch_batches_rejects_bad_batch_size():
    with pytest.raises(ValueError):
        epoch_batches([item((16, 16))], 0, 1, 5)
