"""Recipe presets, project overrides and their validation errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from wanlora.errors import WanloraError
from wanlora.recipes import (
    config_to_toml,
    load_project,
    load_recipe,
    merge_config,
    recipe_names,
)
from wanlora.recipes.project import tomllib


def test_presets_exist():
    assert {"wan22-t2v", "wan21-t2v", "wan22-i2v"} <= set(recipe_names())


def test_wan22_recipe_values_match_recipe_md():
    c = load_recipe("wan22-t2v")
    assert c.task == "t2v-A14B" and c.boundary == 0.875
    assert c.dataset.resolution == (960, 960) and c.dataset.batch_size == 1
    assert c.dataset.enable_bucket and not c.dataset.bucket_no_upscale
    assert (c.lora.network_dim, c.lora.network_alpha) == (16, 16.0)
    assert c.optimizer.learning_rate == 3e-4 and c.optimizer.weight_decay == 0.1
    assert c.optimizer.max_grad_norm == 0
    assert c.scheduler.lr_scheduler == "polynomial" and c.scheduler.lr_scheduler_power == 8
    assert c.scheduler.lr_scheduler_min_lr_ratio == 5e-5
    assert c.timesteps.timestep_sampling == "shift" and c.timesteps.discrete_flow_shift == 1.0
    assert c.timesteps.preserve_distribution_shape
    t = c.training
    assert (t.max_train_epochs, t.save_every_n_epochs, t.seed) == (100, 100, 5)
    assert t.mixed_precision == "fp16" and t.fp8_base and t.gradient_checkpointing
    assert t.gradient_accumulation_steps == 1 and t.max_data_loader_n_workers == 2
    assert set(c.experts) == {"high", "low"}
    assert (c.experts["high"].min_timestep, c.experts["high"].max_timestep) == (875, 1000)
    assert (c.experts["low"].min_timestep, c.experts["low"].max_timestep) == (0, 875)


def test_wan21_recipe_differences():
    c = load_recipe("wan21-t2v")
    assert (c.lora.network_dim, c.lora.network_alpha) == (32, 32.0)
    assert c.scheduler.lr_scheduler_power == 4
    assert c.training.mixed_precision == "bf16"
    assert not c.timesteps.preserve_distribution_shape
    assert list(c.experts) == ["main"]


def test_output_names_follow_the_recipe():
    c = merge_config({"recipe": "wan22-t2v", "project": {"name": "MyStyle_v1", "author": "me"}})
    assert c.output_name("high") == "WAN2.2-HighNoise_MyStyle_v1_by-me"
    assert c.output_name("low") == "WAN2.2-LowNoise_MyStyle_v1_by-me"
    assert c.metadata_title("low") == "WAN2.2-LowNoise_MyStyle_v1_by-me"


def test_overrides_merge_deeply():
    c = merge_config(
        {
            "recipe": "wan22-t2v",
            "optimizer": {"learning_rate": 1e-4},
            "experts": {"high": {"dit": "/x.safetensors"}},
        }
    )
    assert c.optimizer.learning_rate == 1e-4
    assert c.optimizer.weight_decay == 0.1  # untouched sibling
    assert c.experts["high"].dit == "/x.safetensors"
    assert c.experts["high"].min_timestep == 875  # untouched sibling inside the expert


def test_toml_dump_round_trips():
    for name in recipe_names():
        c = load_recipe(name)
        again = merge_config(tomllib.loads(config_to_toml(c)))
        assert again == c


def table_of(text: str, line: str) -> str:
    """The [table] a line of the dump is in."""
    before = text[: text.index(line)]
    return before[before.rindex("\n[") + 1 :].split("\n", 1)[0]


def test_toml_dump_shows_every_setting_and_what_unset_means():
    c = load_recipe("wan22-t2v")
    text = config_to_toml(c)
    shown = {
        line.lstrip("# ").split(" = ", 1)[0] for line in text.splitlines() if " = " in line
    }
    tables = [getattr(c, f) for f in type(c).model_fields]
    tables = [c, *(t for t in tables if isinstance(t, BaseModel)), c.experts["high"]]
    for table in tables:
        for name in type(table).model_fields:
            if not isinstance(getattr(table, name), (BaseModel, dict)):  # a key, not a table
                assert name in shown, (type(table).__name__, name)
    models = [type(t) for t in tables]
    for line, table in [
        ("# max_vram_gb = (unset: the card's free memory)", "[training]"),
        ("# dir = (unset: $WANLORA_MODELS_DIR, else ~/.cache/wanlora/models)", "[models]"),
        ("# every_n_epochs = (unset: no samples during training)", "[sample]"),
    ]:
        assert line in text.splitlines() and table_of(text, line) == table
    # every setting that can be unset says what unset means
    for model in models:
        for name, field in model.model_fields.items():
            if field.default is None:
                assert (field.json_schema_extra or {}).get("unset"), (model.__name__, name)

    # set ones print as values, and the dump still loads back to the same config
    c.training.max_vram_gb = 24.0
    c.sample.every_n_epochs = 10
    c.sample.prompts = ['a "quoted" prompt', "two\nlines"]
    text = config_to_toml(c)
    assert "max_vram_gb = 24.0" in text and "every_n_epochs = 10" in text
    assert merge_config(tomllib.loads(text)) == c


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            {"optimizer": {"lrr": 1}},
            "unknown key 'optimizer.lrr' (allowed here: betas, eps, learning_rate",
        ),
        ({"optimizer": {"learning_rate": "abc"}}, "key 'optimizer.learning_rate' = 'abc'"),
        ({"optimizer": {"learning_rate": -1.0}}, "greater than 0"),
        ({"lora": {"network_dim": 0}}, "key 'lora.network_dim' = 0"),
        ({"training": {"mixed_precision": "fp32"}}, "'fp16', 'bf16' or 'no'"),
        ({"dataset": {"resolution": [960, 950]}}, "multiple of 16"),
        (
            {"experts": {"high": {"min_timestep": 900, "max_timestep": 100}}},
            "must be below max_timestep",
        ),
        ({"experts": {"mid": {"dit": "x"}}}, "unknown expert(s) ['mid']"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"project": {"name": "../evil"}}, "usable in a file name"),
    ],
)
def test_bad_overrides_name_the_key(overrides, expected):
    with pytest.raises(WanloraError) as info:
        merge_config({"recipe": "wan22-t2v", **overrides}, source="p/wanlora.toml")
    assert expected in str(info.value)
    assert str(info.value).startswith("p/wanlora.toml: ")


def test_unknown_recipe_lists_known_ones():
    with pytest.raises(WanloraError, match="use one of: wan21-t2v, ") as error:
        merge_config({"recipe": "sdxl"})
    assert str(error.value).endswith(", ".join(recipe_names()))  # every preset, sorted


def test_missing_recipe_key():
    with pytest.raises(WanloraError, match="missing `recipe"):
        merge_config({"project": {"name": "x"}})


def test_load_project_errors(tmp_path):
    with pytest.raises(WanloraError, match="no project file here"):
        load_project(tmp_path)
    (tmp_path / "wanlora.toml").write_text("recipe = [", encoding="utf-8")
    with pytest.raises(WanloraError, match="invalid TOML"):
        load_project(tmp_path)
    (tmp_path / "wanlora.toml").write_bytes(b'recipe = "\xff"')
    with pytest.raises(WanloraError, match="not UTF-8"):
        load_project(tmp_path)
