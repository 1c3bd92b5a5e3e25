"""The typed, validated config a recipe fills and a project's wanlora.toml overrides.

Every field has the recipe's meaning; field names follow musubi-tuner's flags where one
exists, so RECIPE.md and `wanlora export musubi` read the same. A field that may be unset
(None) says what unset means (`unset(...)`): `wanlora inspect` prints it as a comment.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MixedPrecision = Literal["fp16", "bf16", "no"]

# What each recipe task trains: the DiT task word models.load_dit checks ("t2v", "i2v",
# "ti2v"), the VAE models.load_vae loads, and the pixel step sides must be multiples of
# (VAE stride x the DiT's 2x2 patch: 16 for the Wan 2.1 VAE, 32 for the Wan 2.2 VAE).
TASK_DIT = {"t2v-A14B": "t2v", "t2v-14B": "t2v", "i2v-A14B": "i2v", "ti2v-5B": "ti2v"}
TASK_VAE = {"t2v-A14B": "wan2.1", "t2v-14B": "wan2.1", "i2v-A14B": "wan2.1", "ti2v-5B": "wan2.2"}
TASK_SIZE_STEP = {"t2v-A14B": 16, "t2v-14B": 16, "i2v-A14B": 16, "ti2v-5B": 32}


def unset(meaning: str) -> dict:
    """Field(json_schema_extra=...) for an optional field: what leaving it unset means."""
    return {"unset": meaning}


class StrictModel(BaseModel):
    """Unknown keys are errors, not silently ignored settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ProjectInfo(StrictModel):
    name: str = Field(
        "MyLora_v1", min_length=1, description="LoRA name used in file names and titles"
    )
    author: str = Field("anonymous", min_length=1, description="author in file names and metadata")
    trigger: str | None = Field(
        None,
        description="style/trigger phrase every caption must start with",
        json_schema_extra=unset("no phrase; `wanlora caption` then needs --style-tag"),
    )

    @field_validator("name", "author")
    @classmethod
    def _safe_for_file_names(cls, value: str) -> str:
        bad = set('/\\:*?"<>|') | {"\0"}
        if any(c in bad for c in value) or value.strip() != value or value in {".", ".."}:
            raise ValueError('must be usable in a file name (no / \\ : * ? " < > | or edge spaces)')
        return value


class DatasetSettings(StrictModel):
    directory: str = Field("dataset", description="image folder, relative to the project")
    dataset_toml: str | None = Field(
        None,
        description="a musubi-tuner dataset.toml to use instead of `directory`",
        json_schema_extra=unset("the images in `directory`"),
    )
    resolution: tuple[int, int] = (960, 960)
    caption_extension: str = ".txt"
    batch_size: int = Field(1, ge=1)
    enable_bucket: bool = True
    bucket_no_upscale: bool = False
    num_repeats: int = Field(1, ge=1)
    # Video datasets (videos in `directory`, or video_directory / video_jsonl_file entries of
    # a dataset.toml): musubi-tuner's key names and defaults (WAN22_MODELS.md section 9).
    target_frames: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1],
        min_length=1,
        description="clip lengths in frames, each rounded down to 4n+1",
    )
    frame_extraction: Literal["head", "chunk", "slide", "uniform", "full"] = Field(
        "head", description="how clips are cut from a video (musubi-tuner's modes)"
    )
    frame_stride: int = Field(1, ge=1, description="slide: frames between clip starts")
    frame_sample: int = Field(1, ge=1, description="uniform: clips per target length")
    max_frames: int = Field(129, ge=1, description="full: the longest clip, rounded to 4n+1")
    source_fps: float | None = Field(
        None,
        gt=0,
        description="the videos' frame rate; set it to drop frames to the model's rate",
        json_schema_extra=unset("every frame is used at the video's own rate"),
    )

    @field_validator("resolution")
    @classmethod
    def _multiple_of_16(cls, value: tuple[int, int]) -> tuple[int, int]:
        for side in value:
            if side < 16 or side % 16:
                raise ValueError(f"each side must be a positive multiple of 16 (got {side})")
        return value


class LoraSettings(StrictModel):
    network_module: Literal["networks.lora_wan"] = "networks.lora_wan"
    network_dim: int = Field(16, ge=1, le=1024)
    network_alpha: float = Field(16.0, gt=0)
    network_dropout: float | None = Field(None, ge=0, lt=1, json_schema_extra=unset("no dropout"))


class OptimizerSettings(StrictModel):
    optimizer_type: Literal["AdamW"] = "AdamW"
    learning_rate: float = Field(3e-4, gt=0, lt=1)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(0.0, ge=0, description="0 disables clipping")


class SchedulerSettings(StrictModel):
    lr_scheduler: Literal["polynomial", "constant", "linear", "cosine"] = "polynomial"
    lr_scheduler_power: float = Field(8.0, gt=0)
    lr_scheduler_min_lr_ratio: float | None = Field(
        5e-5,
        ge=0,
        le=1,
        description="passed by the recipe but NOT applied by the reference's polynomial schedule",
        json_schema_extra=unset("not passed"),
    )
    lr_end: float = Field(
        1e-7, ge=0, description="polynomial schedule's final lr (transformers' default)"
    )
    lr_warmup_steps: int = Field(0, ge=0)


class TimestepSettings(StrictModel):
    timestep_sampling: Literal["shift", "sigmoid", "uniform"] = "shift"
    discrete_flow_shift: float = Field(1.0, gt=0)
    sigmoid_scale: float = Field(1.0, gt=0)
    preserve_distribution_shape: bool = True


class TrainingSettings(StrictModel):
    max_train_epochs: int = Field(100, ge=1)
    save_every_n_epochs: int = Field(100, ge=1)
    seed: int = 5
    mixed_precision: MixedPrecision = "fp16"
    fp8_base: bool = True
    gradient_checkpointing: bool = True
    gradient_accumulation_steps: int = Field(1, ge=1)
    attention: Literal["sdpa", "xformers"] = Field(
        "sdpa", description="xformers in the reference; SDPA is numerically equivalent"
    )
    max_data_loader_n_workers: int = Field(2, ge=0)
    save_state_every_n_steps: int = Field(100, ge=1, description="resume points (ours)")
    # --- speed (ours; wanlora.train.speed). The defaults keep the recipe's numerics.
    speed: Literal["exact", "fast"] = Field(
        "exact",
        description="exact: the reference's numerics (fp8-valued weights, fp16/bf16 compute); "
        "fast: opt-in, CHANGES NUMERICS: the block linears multiply in fp8 (activations and "
        "gradients quantised per tensor), about 1.2x quicker on an H100",
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile each transformer block; auto: on for CUDA, off on CPU. Same "
        "precision formats; fused kernels round slightly differently from eager mode",
    )
    checkpointing: Literal["auto", "full", "none"] = Field(
        "auto",
        description="which blocks recompute in backward when gradient_checkpointing is on: "
        "full: every block (the reference); none; auto: only as many as free GPU memory needs "
        "(recompute changes no values, only time and memory)",
    )
    fp8_storage: Literal["auto", "on", "off"] = Field(
        "auto",
        description="hold the block linears' fp8-rounded weights in float8 (14 GB for a 14B "
        "expert) instead of 16 bits (28 GB); bit-identical results. auto: fp8 only when the "
        "16-bit copy would not fit the card with room for activations; needs fp8_base",
    )
    cuda_graph: Literal["auto", "off"] = Field(
        "auto",
        description="replay each training step from a CUDA graph (captured once per bucket "
        "shape, after 3 warm-up steps whose effect is undone): the same kernels without the "
        "CPU's launch time, results equal up to rounding. auto: on a GPU when no block recomputes, "
        "gradient_accumulation_steps is 1, max_grad_norm is 0 and one process trains",
    )
    text_fold: Literal["auto", "on", "off"] = Field(
        "auto",
        description="cross-attention attends to the caption's ~390 identical zero-padding rows "
        "as a few keys weighted by their count (the same maths, float32 rounding; the padding's "
        "K/V projections and attention computed once); off: all 512 rows, as the reference "
        "computes them; auto: on for CUDA, off on CPU",
    )
    # --- TI2V-5B (ours: the official TI2V training is unpublished; WAN22_MODELS.md 5) ---
    ti2v_i2v_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="TI2V-5B: the share of video clips trained image-to-video (latent frame 0 "
        "clean, its tokens at timestep 0), drawn per clip and epoch from the seeded stream; "
        "the rest train text-to-video. Images always train text-to-image",
    )
    ti2v_mask_first_frame: bool = Field(
        True,
        description="TI2V-5B: leave an image-to-video clip's first latent frame (the given "
        "image) out of the loss: the model produces only the frames after it",
    )
    max_vram_gb: float | None = Field(
        None,
        gt=0,
        description="GPU memory budget in GiB (2^30 bytes) for one training process; the "
        "speed plan (fp8 storage, how many blocks recompute) keeps its predicted peak under "
        "it with a margin, with unchanged numerics. Default: the card's free memory. "
        "`wanlora train --max-vram` sets it for one run",
        json_schema_extra=unset("the card's free memory"),
    )

    @model_validator(mode="after")
    def _fp8_storage_needs_fp8_values(self) -> TrainingSettings:
        if self.fp8_storage == "on" and not self.fp8_base and self.speed == "exact":
            raise ValueError(
                "fp8_storage = 'on' with speed = 'exact' needs fp8_base = true "
                "(otherwise storing the weights in fp8 would change them)"
            )
        return self


class ModelSettings(StrictModel):
    dir: str | None = Field(
        None,
        description="shared models folder; default $WANLORA_MODELS_DIR or ~/.cache/wanlora/models",
        json_schema_extra=unset("$WANLORA_MODELS_DIR, else ~/.cache/wanlora/models"),
    )
    vae: str = Field("wan21-vae", description="registry id or path")
    text_encoder: str = Field("umt5-xxl-enc-bf16", description="registry id or path")
    tokenizer: str = Field("umt5-xxl-tokenizer", description="registry id or path to a folder")
    vae_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"


class ExpertSettings(StrictModel):
    dit: str = Field(description="registry id or path of this expert's DiT file")
    min_timestep: int = Field(0, ge=0, le=1000)
    max_timestep: int = Field(1000, ge=0, le=1000)
    output_name: str = Field(description="file stem; {name} and {author} are filled in")
    metadata_title: str = "{output_name}"
    guidance_scale: float | None = Field(
        None,
        ge=0,
        description="this expert's guidance scale in samples (its phase of the boundary)",
        json_schema_extra=unset(
            "[sample] guidance_scale if set, else the task's official scale "
            "(T2V-A14B: high 4.0, low 3.0; I2V-A14B: 3.5 each)"
        ),
    )

    @model_validator(mode="after")
    def _range(self) -> ExpertSettings:
        if self.min_timestep >= self.max_timestep:
            raise ValueError(
                f"min_timestep ({self.min_timestep}) must be below max_timestep ({self.max_timestep})"
            )
        return self


class SampleSettings(StrictModel):
    prompts: list[str] = Field(default_factory=list)
    every_n_epochs: int | None = Field(
        None,
        ge=1,
        description="render samples during training",
        json_schema_extra=unset("no samples during training"),
    )
    steps: int = Field(30, ge=1)
    width: int = Field(960, ge=16, multiple_of=16)
    height: int = Field(960, ge=16, multiple_of=16)
    seed: int = 42
    frames: int = Field(
        1,
        ge=1,
        description="frames per sample: 1 = a PNG; more = an H.264 .mp4 (4n+1 frames) and a PNG",
    )
    strengths: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="LoRA strengths of the samples during training (the report grid's columns)",
    )
    guidance_scale: float | None = Field(
        None,
        ge=0,
        description="one guidance scale for every expert ([experts.NAME] guidance_scale wins)",
        json_schema_extra=unset("each expert's own, else the task's official pair"),
    )
    shift: float = Field(12.0, gt=0, description="flow shift at inference (Wan 2.2 T2V A14B: 12)")
    image: str | None = Field(
        None,
        description="image-to-video: the first frame samples start from (relative to the "
        "project); TI2V-5B: its latent is the first frame; I2V-A14B: needed (or --image)",
        json_schema_extra=unset("TI2V-5B: text-to-video; I2V-A14B: `wanlora sample --image`"),
    )


class ValidationSettings(StrictModel):
    """The validation loss and LoRA-effect check during training (ours; train/validation.py)."""

    enabled: bool = Field(
        True, description="a validation loss and the LoRA's effect per expert during training"
    )
    every_n_epochs: int | None = Field(
        None,
        ge=1,
        description="epochs between validation points (the last epoch always gets one)",
        json_schema_extra=unset("about 10 points a run: every max(1, max_train_epochs // 10)"),
    )
    items: list[str] = Field(
        default_factory=list,
        description="dataset items (file stems, or clip names) held out of training and "
        "validated on while validation is enabled; empty: validate on every training item",
    )
    max_items: int = Field(
        32,
        ge=1,
        description="at most this many items are validated on, spread evenly over the "
        "dataset order (a point costs one forward an item)",
    )
    timesteps: int = Field(
        4, ge=1, le=64, description="fixed timesteps spread over each expert's range"
    )
    seed: int | None = Field(
        None,
        description="seed of the validation noise (its own generator, never training's)",
        json_schema_extra=unset("the training seed"),
    )


class RecipeConfig(StrictModel):
    """A complete training config: a recipe preset, plus a project's overrides."""

    recipe: str
    description: str = ""
    task: Literal["t2v-A14B", "t2v-14B", "i2v-A14B", "ti2v-5B"]
    boundary: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="expert switch point in t (0.875 for Wan 2.2 T2V A14B, 0.9 for I2V A14B)",
        json_schema_extra=unset("one expert, no switch point"),
    )
    project: ProjectInfo = Field(default_factory=ProjectInfo)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    timesteps: TimestepSettings = Field(default_factory=TimestepSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    sample: SampleSettings = Field(default_factory=SampleSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    experts: dict[str, ExpertSettings]

    @model_validator(mode="after")
    def _experts(self) -> RecipeConfig:
        if not self.experts:
            raise ValueError("a recipe needs at least one expert")
        return self

    @model_validator(mode="after")
    def _sizes_fit_the_vae(self) -> RecipeConfig:
        step = TASK_SIZE_STEP[self.task]
        sizes = {
            "dataset.resolution": self.dataset.resolution,
            "sample width x height": (self.sample.width, self.sample.height),
        }
        for where, size in sizes.items():
            if any(side % step for side in size):
                raise ValueError(
                    f"{where} {size[0]}x{size[1]}: {self.task} needs sides that are multiples "
                    f"of {step} (e.g. {size[0] // step * step or step}x{size[1] // step * step or step})"
                )
        return self

    @property
    def dit_task(self) -> str:
        """The DiT task load_dit checks: "t2v", "i2v" or "ti2v"."""
        return TASK_DIT[self.task]

    @property
    def vae_kind(self) -> str:
        """The VAE load_vae loads: "wan2.1" or "wan2.2"."""
        return TASK_VAE[self.task]

    @property
    def size_step(self) -> int:
        """Image/bucket sides are multiples of this (VAE stride x the 2x2 patch)."""
        return TASK_SIZE_STEP[self.task]

    def output_name(self, expert: str) -> str:
        template = self.experts[expert].output_name
        return template.format(name=self.project.name, author=self.project.author)

    def metadata_title(self, expert: str) -> str:
        return self.experts[expert].metadata_title.format(
            output_name=self.output_name(expert), name=self.project.name, author=self.project.author
        )
