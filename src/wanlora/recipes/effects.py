"""What each setting changes: the trained LoRAs, or nothing that is trained.

Every field of the config is named here, once, as a dotted path (`optimizer.learning_rate`;
an expert's fields as `experts.*.min_timestep`). A field marked RESULT changes what a run
produces: its numbers (the learning rate, the seed, the timestep range) or the LoRA files
themselves (their names and metadata). Changing one after a run means training again;
an `experts.*` field touches that expert only, every other RESULT field every expert. A field
marked NONE changes no trained number: how often states are saved, memory and speed
choices that are bit-identical, sampling, and paths whose files are compared by content
instead (the dataset's images and captions, the model files).

`wanlora train` (run/changes.py) reads this table to say what an edit redoes, and the resume
check (train/state.recipe_hash) hashes exactly the RESULT fields, so a resume is refused
for the edits that would retrain and allowed for the rest. tests/test_change_plan.py fails
when a new field is not in the table.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from .schema import RecipeConfig

Effect = Literal["result", "none"]
RESULT: Effect = "result"
NONE: Effect = "none"


def _each(table: str, effect: Effect, names: str) -> dict[str, Effect]:
    return {f"{table}.{name}": effect for name in names.split()}


# every field by name: a field added to the schema and not here fails the test, so no new
# setting is silently ignored (nor silently retrains)
FIELD_EFFECTS: dict[str, Effect] = {
    "recipe": RESULT,
    "description": NONE,
    "task": RESULT,
    "boundary": NONE,  # the expert switch when sampling; training uses each expert's range
    **_each("project", RESULT, "name author"),  # the LoRA file names and titles
    "project.trigger": NONE,  # a lint and captioning rule; the captions are compared
    # where the dataset is: its images and captions are compared by content instead
    **_each("dataset", NONE, "directory dataset_toml"),
    **_each(
        "dataset",
        RESULT,
        "resolution caption_extension batch_size enable_bucket bucket_no_upscale num_repeats "
        "target_frames frame_extraction frame_stride frame_sample max_frames source_fps",
    ),
    **_each("lora", RESULT, "network_module network_dim network_alpha network_dropout"),
    **_each(
        "optimizer",
        RESULT,
        "optimizer_type learning_rate weight_decay betas eps max_grad_norm",
    ),
    **_each(
        "scheduler",
        RESULT,
        "lr_scheduler lr_scheduler_power lr_scheduler_min_lr_ratio lr_end lr_warmup_steps",
    ),
    **_each(
        "timesteps",
        RESULT,
        "timestep_sampling discrete_flow_shift sigmoid_scale preserve_distribution_shape",
    ),
    **_each(
        "training",
        RESULT,
        "max_train_epochs seed mixed_precision fp8_base gradient_accumulation_steps attention "
        "speed compile ti2v_i2v_share ti2v_mask_first_frame",  # compile: fused kernels round differently
    ),
    # save cadence, loader threads, and memory choices that change no value (recompute,
    # fp8 storage, the budget that picks them); CUDA graphs round only, as resume always had
    **_each(
        "training",
        NONE,
        "save_every_n_epochs save_state_every_n_steps max_data_loader_n_workers "
        "gradient_checkpointing checkpointing fp8_storage cuda_graph max_vram_gb text_fold",
    ),
    # paths: the model files themselves are compared (size and fingerprint)
    **_each("models", NONE, "dir vae text_encoder tokenizer"),
    "models.vae_dtype": RESULT,  # the latents
    "experts.*.dit": NONE,  # a path: the file is compared
    **_each("experts.*", RESULT, "min_timestep max_timestep output_name metadata_title"),
    # `wanlora sample` renders them again
    # validation measures, it trains nothing; but its held-out items leave the training set
    "validation.items": RESULT,
    **_each("validation", NONE, "enabled every_n_epochs max_items timesteps seed"),
    **_each(
        "sample",
        NONE,
        "prompts every_n_epochs steps width height seed guidance_scale shift frames strengths image",
    ),
    "experts.*.guidance_scale": NONE,  # a sampling setting
}


def effect_of(field: str) -> Effect:
    """The effect of a dotted field (`experts.low.min_timestep` reads `experts.*....`)."""
    parts = field.split(".")
    if parts[0] == "experts" and len(parts) > 1:
        parts[1] = "*"
    found = FIELD_EFFECTS.get(".".join(parts))
    if found is not None:
        return found
    raise KeyError(f"{field}: not in recipes/effects.py FIELD_EFFECTS")


def expert_of(field: str) -> str | None:
    """The one expert a field belongs to (`experts.low.x` -> low), None for all of them."""
    parts = field.split(".")
    return parts[1] if parts[0] == "experts" and len(parts) > 2 else None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"learning_rate": 3e-4}} -> {"optimizer.learning_rate": 3e-4}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def trained_settings(config: RecipeConfig, expert: str) -> dict[str, Any]:
    """The RESULT fields that shape this expert's LoRA, flat (what recipe_hash hashes)."""
    flat = flatten(config.model_dump(mode="json"))
    mine = {}
    for field, value in flat.items():
        owner = expert_of(field)
        if effect_of(field) == RESULT and owner in (None, expert):
            mine[field] = value
    return mine


def schema_fields(model: type[BaseModel] = RecipeConfig, prefix: str = "") -> list[str]:
    """Every leaf field of the config as a dotted path (experts as `experts.*.`)."""
    fields = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields += schema_fields(annotation, f"{prefix}{name}.")
        elif name == "experts" and not prefix:
            expert_model = annotation.__args__[-1]  # dict[str, ExpertSettings]
            fields += schema_fields(expert_model, f"{prefix}{name}.*.")
        else:
            fields.append(f"{prefix}{name}")
    return fields
