"""Two-expert Wan inference on our loaded models, through diffusers' WanPipeline.

Wan 2.2 T2V A14B denoises with two experts: `transformer` (the high-noise model) for every
scheduler timestep t >= boundary * 1000, `transformer_2` (the low-noise model) below it
(diffusers' WanPipeline switches on `boundary_ratio`). Wan 2.1 has one expert and no
boundary. The scheduler is UniPC on flow-matching sigmas with the recipe's inference shift
(sample.shift, 12 for T2V A14B), as Wan's own sampler.

Each expert guides its own phase with its own scale (`RenderSpec.guidance`, by expert):
WanPipeline's `guidance_scale` for `transformer`, `guidance_scale_2` for `transformer_2`.

Noise: every sample's initial latent noise comes from its own CPU generator seeded with its
seed, whatever the batch and the device, so the same seed and size give the same noise in
every epoch and every run: samples differ only by what the models (and LoRAs) do with it.

Prompt embeddings are ours (wanlora.models.TextEncoder, the same encoding the training cache
holds), zero-padded to 512 rows and passed as prompt_embeds / negative_prompt_embeds, so the
pipeline's own tokenizer and text encoder are never used.

Image-to-video (I2V-A14B, RenderSpec.image set): the same two experts through diffusers'
WanImageToVideoPipeline instead (i2v.py), which adds the first-frame conditioning.

Memory: the inactive expert need not stay on the GPU. `ExpertResidency` keeps both experts
on the compute device when they fit, and otherwise moves an expert onto it (and the other one
off, to the CPU) right before its first forward after the switch; `needs_offload` decides
from the free VRAM.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler, WanPipeline
from PIL import Image
from torch import nn

from ..models.precision import autocast
from ..models.text_encoder import TEXT_LEN, pad_context
from .i2v import i2v_pipeline

log = logging.getLogger(__name__)

# Wan's default negative prompt (wan/configs/shared_config.py, sample_neg_prompt); the
# reference trainer's sampler uses it too.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

GIB = 1024**3
# VRAM kept free for activations, the VAE decode and the CUDA context when deciding whether
# both experts fit (one 960x960 frame needs well under this)
DEFAULT_RESERVE_BYTES = 6 * GIB


def flow_scheduler(shift: float, num_train_timesteps: int = 1000):
    """UniPC (bh2) on flow-matching sigmas with the given shift, as Wan's own sampler."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=num_train_timesteps,
        flow_shift=shift,
    )


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def module_device(module: nn.Module) -> torch.device:
    return next(itertools.chain(module.parameters(), module.buffers())).device


def streams_its_blocks(module: nn.Module) -> bool:
    """A model whose blocks stream from host memory during its forward (training's block
    swap on a small card sets `wanlora_block_swap`; sampling cannot import train). It already
    runs where it is: `.to(device)` would copy every streamed weight onto the GPU and undo
    the swap, `.to("cpu")` would move its ring and resident blocks off. Never moved."""
    return getattr(module, "wanlora_block_swap", None) is not None


def move_unless_streamed(module: nn.Module, device: torch.device | str) -> None:
    """`module.to(device)`, except for a model that streams its blocks (stays in place)."""
    if not streams_its_blocks(module):
        module.to(device)


def needs_offload(
    sizes: Sequence[int],
    device: torch.device,
    *,
    resident: int = 0,
    reserve: int = DEFAULT_RESERVE_BYTES,
) -> bool:
    """Whether experts of `sizes` bytes cannot all be on `device` at once.

    `resident`: bytes of those experts already on the device (counted in use by the driver,
    so they are not counted again). Only CUDA devices are ever offloaded from.
    """
    if device.type != "cuda" or len(sizes) < 2:
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return sum(sizes) - resident + reserve > free


class ExpertResidency:
    """Which expert sits on the compute device; the others wait on `offload_device`.

    A model that streams its blocks from host memory (training's block swap) is never moved:
    it runs where it is, its resident part staying on the GPU through every switch.
    Without offload every expert is moved to `device` once. With offload a forward pre-hook
    on each expert moves it to `device` on its first call after the switch and moves the
    previously active one to `offload_device` first (so the two are never both on the GPU).
    `events` records ("load" | "offload", expert name) in order.
    """

    def __init__(
        self,
        experts: dict[str, nn.Module],
        device: torch.device,
        *,
        offload: bool,
        offload_device: torch.device | str = "cpu",
    ):
        self.experts = experts
        self.device = torch.device(device)
        self.offload = offload
        self.offload_device = torch.device(offload_device)
        self.events: list[tuple[str, str]] = []
        self.active: str | None = None
        self._handles = []
        if not offload:
            for module in experts.values():
                move_unless_streamed(module, self.device)
            return
        for name, module in experts.items():
            if streams_its_blocks(module):
                continue  # in place on both sides of every switch
            if module_device(module) == self.device and self.active is None:
                self.active = name  # already in place (e.g. the model being trained)
            elif module_device(module) != self.offload_device:
                self._move(name, self.offload_device, "offload")
        for name, module in experts.items():
            self._handles.append(module.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str):
        def pre_forward(_module, _args):
            self.activate(name)

        return pre_forward

    def _move(self, name: str, device: torch.device, event: str) -> None:
        if streams_its_blocks(self.experts[name]):
            return  # runs in place: its blocks come to the GPU one by one as it runs
        self.experts[name].to(device)
        self.events.append((event, name))

    def activate(self, name: str) -> None:
        """Put `name` on the compute device (offloading the active one first)."""
        if not self.offload or self.active == name:
            return
        if self.active is not None:
            self._move(self.active, self.offload_device, "offload")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self._move(name, self.device, "load")
        self.active = name

    def close(self) -> None:
        """Remove the hooks (the experts stay where they are)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@dataclass
class RenderSpec:
    """What to render: one clip (`frames` frames, 4n+1; 1 = a still) per (context, seed)."""

    contexts: list[torch.Tensor]  # (L_i, D) each, unpadded
    seeds: list[int]
    negative: torch.Tensor | None  # (L, D); None: no classifier-free guidance
    steps: int
    width: int
    height: int
    guidance: dict[str, float]  # expert -> classifier-free guidance scale in its phase
    shift: float
    boundary: float | None = None
    batch_size: int = 4
    frames: int = 1
    image: Image.Image | None = None  # image-to-video: the first frame, at width x height
    # filled in by render(): (expert, timestep) per transformer call, and the residency's
    # ("load" | "offload", expert) moves
    timesteps_seen: list[tuple[str, float]] = field(default_factory=list)
    residency_events: list[tuple[str, str]] = field(default_factory=list)


@torch.no_grad()
def render(
    experts: dict[str, nn.Module],
    vae: nn.Module,
    spec: RenderSpec,
    *,
    device: torch.device,
    dtype: torch.dtype,
    offload: bool = False,
) -> list[list[Image.Image]]:
    """The frames of a clip for every (context, seed) in `spec` (one frame: a still). With
    spec.image the experts are image-to-video ones (I2V-A14B) and every clip starts from it.

    experts: name -> transformer, the high-noise expert first (the one for t >= boundary);
    one expert (Wan 2.1) means no boundary. The experts keep their own LoRAs and multipliers.
    The models are left in eval mode wherever the residency put them.
    """
    if len(spec.contexts) != len(spec.seeds):
        raise ValueError("one seed per context")
    names = list(experts)
    if len(names) not in (1, 2):
        raise ValueError(f"expected one or two experts, got {names}")
    if len(names) == 2 and spec.boundary is None:
        raise ValueError("two experts need a boundary")
    if set(spec.guidance) != set(names):
        raise ValueError(f"guidance scales for {sorted(spec.guidance)}, experts {names}")
    scale = spec.guidance[names[0]]
    scale_2 = spec.guidance[names[1]] if len(names) == 2 else None
    if scale <= 1.0 and scale_2 is not None and scale_2 > 1.0:
        raise ValueError("WanPipeline guides the second phase only if it guides the first")
    for module in experts.values():
        module.eval()
    residency = ExpertResidency(experts, device, offload=offload)
    hooks = [
        module.register_forward_pre_hook(
            _timestep_recorder(name, spec.timesteps_seen), with_kwargs=True
        )
        for name, module in experts.items()
    ]
    vae.to(device)
    parts = dict(
        vae=vae,
        scheduler=flow_scheduler(spec.shift),
        transformer=experts[names[0]],
        transformer_2=experts[names[1]] if len(names) == 2 else None,
        boundary_ratio=spec.boundary if len(names) == 2 else None,
    )
    if spec.image is not None:
        pipe = i2v_pipeline(**parts)
    else:
        pipe = WanPipeline(tokenizer=None, text_encoder=None, **parts)
    pipe.set_progress_bar_config(disable=True)
    clips: list[list[Image.Image]] = []
    try:
        for start in range(0, len(spec.seeds), spec.batch_size):
            contexts = spec.contexts[start : start + spec.batch_size]
            seeds = spec.seeds[start : start + spec.batch_size]
            embeds = torch.stack([pad_context(c.float(), TEXT_LEN) for c in contexts]).to(device)
            negative = None
            if spec.negative is not None and scale > 1.0:
                negative = pad_context(spec.negative.float(), TEXT_LEN).to(device)
                negative = negative.unsqueeze(0).expand(len(contexts), -1, -1).contiguous()
            image = {} if spec.image is None else {"image": spec.image}
            with autocast(device, dtype):  # the transformers compute as in training
                latents = pipe(
                    **image,
                    prompt_embeds=embeds,
                    negative_prompt_embeds=negative,
                    height=spec.height,
                    width=spec.width,
                    num_frames=spec.frames,
                    num_inference_steps=spec.steps,
                    guidance_scale=scale,
                    guidance_scale_2=scale_2,
                    generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                    output_type="latent",
                ).frames
            frames = decode_latents(pipe, vae, latents)  # the VAE in its own dtype
            for video in frames:  # (B, F, H, W, C) in [0, 1]
                pixels = np.clip(np.rint(video * 255.0), 0, 255).astype(np.uint8)
                clips.append([Image.fromarray(frame, "RGB") for frame in pixels])
    finally:
        for hook in hooks:
            hook.remove()
        residency.close()
        spec.residency_events.extend(residency.events)
    return clips


def decode_latents(pipe, vae: nn.Module, latents: torch.Tensor) -> np.ndarray:
    """Normalised latents -> (B, F, H, W, 3) floats in [0, 1], as WanPipeline decodes."""
    parameter = next(vae.parameters())
    latents = latents.to(parameter.device, parameter.dtype)
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
    std = torch.tensor(vae.config.latents_std).view(shape).to(latents)
    video = vae.decode(latents * std + mean, return_dict=False)[0]
    return np.asarray(pipe.video_processor.postprocess_video(video, output_type="np"))


def _timestep_recorder(name: str, seen: list[tuple[str, float]]):
    def pre_forward(_module, _args, kwargs):
        timestep = kwargs.get("timestep")
        if timestep is not None:
            seen.append((name, float(timestep.flatten()[0])))

    return pre_forward
