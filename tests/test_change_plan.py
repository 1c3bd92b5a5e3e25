"""Which settings retrain what, and the changes a plan lists (no training here)."""

from __future__ import annotations

import pytest

from wanlora.recipes import load_recipe
from wanlora.recipes.effects import FIELD_EFFECTS, NONE, RESULT, effect_of, schema_fields
from wanlora.run.changes import ALL, dataset_changes, model_changes, setting_changes
from wanlora.train.state import recipe_hash


def test_every_schema_field_is_classified_by_name():
    fields = schema_fields()
    missing = [f for f in fields if f not in FIELD_EFFECTS]
    assert missing == [], f"add these to recipes/effects.py FIELD_EFFECTS: {missing}"
    assert set(FIELD_EFFECTS) == set(fields)  # no entry for a field that is gone
    assert effect_of("experts.low.min_timestep") == RESULT
    assert effect_of("experts.high.dit") == NONE
    with pytest.raises(KeyError, match="FIELD_EFFECTS"):
        effect_of("training.a_new_field")


@pytest.mark.parametrize(
    "table, field, value, retrained",
    [
        ("optimizer", "learning_rate", 1e-3, True),
        ("training", "seed", 7, True),
        ("sample", "prompts", ["a red square"], False),
        ("training", "save_state_every_n_steps", 3, False),
        ("training", "save_every_n_epochs", 3, False),
        ("training", "max_vram_gb", 24.0, False),
    ],
)
def test_the_resume_hash_follows_the_table(table, field, value, retrained):
    config = load_recipe("wan22-t2v")
    edited = config.model_copy(deep=True)
    setattr(getattr(edited, table), field, value)
    changed = recipe_hash(config, "high") != recipe_hash(edited, "high")
    assert changed == retrained
    (change,) = setting_changes(config.model_dump(mode="json"), edited.model_dump(mode="json"))
    assert bool(change.retrains) == retrained


def test_an_expert_field_retrains_that_expert_only():
    config = load_recipe("wan22-t2v")
    edited = config.model_copy(deep=True)
    edited.experts["low"].max_timestep = 500
    assert recipe_hash(config, "high") == recipe_hash(edited, "high")
    assert recipe_hash(config, "low") != recipe_hash(edited, "low")
    (change,) = setting_changes(config.model_dump(mode="json"), edited.model_dump(mode="json"))
    assert change.text == "[experts.low] max_timestep 875 -> 500"
    assert change.retrains == {"low"} and change.touches("low") and not change.touches("high")


def test_dataset_changes_name_the_files():
    def item(file="f", caption="c", name="a.txt"):
        return {"file": file, "caption": caption, "caption_file": name, "bucket": "64x64",
                "repeats": 1}  # fmt: skip

    old = {"a.png": item(), "b.png": item(name="b.txt"), "c.png": item(name="c.txt")}
    new = {"a.png": item(caption="edited"), "b.png": item(file="new"), "d.png": item()}
    texts = [c.text for c in dataset_changes(old, new)]
    assert texts == [
        "1 image added (d.png)",
        "1 image removed (c.png)",
        "1 image changed (b.png)",
        "1 caption changed (a.txt)",
    ]
    assert all(c.retrains == {ALL} for c in dataset_changes(old, new))


def test_a_changed_dit_file_retrains_its_expert():
    old = {"vae": {"name": "v", "fingerprint": "1"}, "dit.low": {"name": "l", "fingerprint": "1"}}
    new = {"vae": {"name": "v", "fingerprint": "1"}, "dit.low": {"name": "l2", "fingerprint": "2"}}
    (change,) = model_changes(old, new)
    assert change.retrains == {"low"} and "l -> l2" in change.text
