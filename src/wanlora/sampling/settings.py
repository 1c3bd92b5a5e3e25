"""What a sample's settings resolve to, per task: guidance per expert, frames, frame rate.

Guidance: each expert denoises its own phase of the boundary with its own scale. The
official values (Wan 2.2's wan/configs: `sample_guide_scale`, given there as (low, high)):
T2V-A14B low 3.0 / high 4.0, I2V-A14B 3.5 / 3.5, TI2V-5B and Wan 2.1 T2V-14B 5.0. A scale is
chosen as: the expert's own `[experts.NAME] guidance_scale`, else `[sample] guidance_scale`,
else the task's official scale for that expert's phase.

Frames: the Wan VAE compresses time 4x after the first frame, so a clip has 4n+1 frames;
another count is rounded to the nearest 4n+1 (with a note saying so). 1 frame is a still.
Frame rate: 16 fps for the A14B models (and Wan 2.1), 24 for TI2V-5B, as Wan writes them.
"""

from __future__ import annotations

from ..errors import WanloraError
from ..recipes.schema import RecipeConfig

# task -> scales by phase, the high-noise expert first (one entry: a one-expert task)
TASK_GUIDANCE: dict[str, tuple[float, ...]] = {
    "t2v-A14B": (4.0, 3.0),
    "i2v-A14B": (3.5, 3.5),
    "ti2v-5B": (5.0,),
    "t2v-14B": (5.0,),
}
FALLBACK_GUIDANCE = 5.0  # Wan's own default for a task without a published pair
TASK_FPS: dict[str, int] = {"ti2v-5B": 24}
DEFAULT_FPS = 16


def guidance_scales(
    config: RecipeConfig, names: list[str], override: float | None = None
) -> dict[str, float]:
    """expert -> guidance scale, `names` high-noise first (sample.ordered_experts).

    `override` (e.g. `wanlora sample --guidance`) applies to every expert.
    """
    official = TASK_GUIDANCE.get(config.task, ())
    scales = {}
    for i, name in enumerate(names):
        if override is not None:
            scales[name] = override
            continue
        own = config.experts[name].guidance_scale
        shared = config.sample.guidance_scale
        default = official[min(i, len(official) - 1)] if official else FALLBACK_GUIDANCE
        scales[name] = own if own is not None else shared if shared is not None else default
    first, *rest = [scales[n] for n in names]
    if first <= 1.0 and any(s > 1.0 for s in rest):
        # diffusers' WanPipeline decides classifier-free guidance from the first scale alone
        raise WanloraError(
            f"guidance {first:g} for the {names[0]} expert and above 1 for {names[1]}: "
            "the sampler guides both phases or neither",
            f"set [experts.{names[0]}] guidance_scale above 1, or every scale to 1",
        )
    return scales


def video_fps(task: str) -> int:
    return TASK_FPS.get(task, DEFAULT_FPS)


def clip_frames(frames: int) -> tuple[int, str | None]:
    """`frames` as the nearest 4n+1 (ties round up), and a note when it changed."""
    if frames < 1:
        raise WanloraError(f"frames = {frames}: a sample has at least one frame", "use 1 or 4n+1")
    if frames % 4 == 1:
        return frames, None
    rounded = max(5, 4 * round((frames - 1) / 4 + 1e-9) + 1)  # asked for a clip: a clip
    return rounded, f"{frames} frames is not 4n+1 (the VAE's frame grouping): rendering {rounded}"
