"""Samples during training, and the timing/memory numbers the report shows.

`TrainingMonitor` is an `on_epoch_end(expert, epochs_done, model)` callback: the run layer
(wanlora.run) builds it and hands it to the training loop, which never imports sampling.
Every epoch it records peak memory to tensorboard (output/logs/<expert>: perf/peak_vram_gib,
perf/peak_rss_gib; sampling's own peak perf/sample_peak_vram_gib). Every `[sample] every_n_epochs` epochs it renders
the `[sample]` prompts: the expert being trained runs with its LoRA as it is now (at each
`[sample] strengths` entry), the other phase of the boundary with the other expert's BASE
model (loaded once, kept on the CPU between samples). The first time, the base models alone
(LoRA at 0) render the same prompts: the report grid's "base" row (not again after a resume
when the files with the same settings are there). Every render uses the same seed and
noise, so epochs differ only by the LoRA. Samples go to output/samples/
(train_<expert>_e<epoch>_p<i>_seed<s>[_s<strength>], train_base_p<i>_seed<s>; .png, and
.mp4 with `[sample] frames` > 1) and their first frames to tensorboard (samples/p<i>; the
base at step 0), with perf/sample_seconds (all of it, kept apart from training time).
TI2V-5B has one model: its samples come from ti2v.render_ti2v (a video, or an image at
1 frame; image-to-video with `[sample] image`). I2V-A14B's two experts render as
T2V's, every clip from the `[sample] image` first frame (i2v.start_image).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import faults
from ..device_memory import free_device_memory
from ..lora.inject import set_lora_multiplier
from ..models.dit import infer_dit_info, load_dit
from ..models.precision import compute_dtype
from ..outputs import OutputLayout
from ..recipes import Project
from .files import read_png_info, save_sample
from .i2v import start_image
from .pipeline import (
    DEFAULT_NEGATIVE_PROMPT,
    GIB,
    RenderSpec,
    module_bytes,
    module_device,
    move_unless_streamed,
    needs_offload,
    render,
)
from .sample import dit_path, encode_prompts, load_vae_for, ordered_experts
from .settings import clip_frames, guidance_scales, video_fps
from .ti2v import Ti2vSpec, fit_image, render_ti2v
from .ti2v_sample import sample_image_path
from .ti2v_sample import save_sample as save_ti2v_sample

log = logging.getLogger(__name__)


def peak_rss_gib() -> float:
    """This process's peak resident memory so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024**3 if sys.platform == "darwin" else 1024**2)


class TrainingMonitor:
    """on_epoch_end callback: memory numbers every epoch, samples every n epochs."""

    def __init__(
        self,
        project: Project,
        device: torch.device,
        *,
        offload: bool | None = None,
        log_dir: Path | None = None,
        render_base: bool = True,
    ):
        self.project = project
        self.device = torch.device(device)
        self.offload = offload
        self.layout = OutputLayout.of(project)
        self.log_dir = log_dir or self.layout.logs_root
        sample = project.config.sample
        self.prompts = list(sample.prompts)
        self.every = sample.every_n_epochs
        self.names = ordered_experts(project.config)
        self.saved: list[Path] = []
        self._writers: dict[str, object] = {}
        self._contexts: list[torch.Tensor] | None = None
        self._negative: torch.Tensor | None = None
        self.base_saved: list[Path] = []  # the base models' samples (no LoRA), once
        self._base_rendered = not render_base  # False: another process renders the base row
        self._noted = False
        self._base: dict[str, torch.nn.Module] = {}
        self._vae = None

    @property
    def sampling(self) -> bool:
        return bool(self.prompts) and self.every is not None

    def __call__(self, expert: str, epochs_done: int, model: torch.nn.Module) -> None:
        writer = self._writer(expert)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / GIB
            if writer is not None:
                writer.add_scalar("perf/peak_vram_gib", peak, epochs_done)
        if writer is not None:
            writer.add_scalar("perf/peak_rss_gib", peak_rss_gib(), epochs_done)
        if self.sampling and epochs_done % self.every == 0:
            started = time.perf_counter()
            if self.device.type == "cuda":  # sampling's own peak, beside the training's
                torch.cuda.reset_peak_memory_stats(self.device)
            try:
                self.sample(expert, epochs_done, model)
            except torch.OutOfMemoryError:
                log.warning("%s: out of memory while sampling; samples skipped", expert)
                free_device_memory(self.device)
            if writer is not None:
                writer.add_scalar("perf/sample_seconds", time.perf_counter() - started, epochs_done)
                if self.device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated(self.device) / GIB
                    writer.add_scalar("perf/sample_peak_vram_gib", peak, epochs_done)
        if writer is not None:
            writer.flush()
        if self.device.type == "cuda":  # the next epoch's peak is its own
            torch.cuda.reset_peak_memory_stats(self.device)

    # --- sampling ---------------------------------------------------------------------------

    def sample(self, expert: str, epochs_done: int, model: torch.nn.Module) -> list[Path]:
        """Render the [sample] prompts with `model` (carrying its LoRA) for `expert`'s phase:
        once per [sample] strengths entry, and the base models once (the grid's top row)."""
        config = self.project.config
        s = config.sample
        self._encode()
        dtype = self._compute_dtype(expert)
        train_device = module_device(model)
        was_training = model.training
        if config.task == "ti2v-5B":  # one model, no other phase
            return self._sample_ti2v(expert, epochs_done, model, dtype, train_device, was_training)
        experts = {
            name: model if name == expert else self._base_model(name, dtype) for name in self.names
        }
        if self._vae is None:
            self._vae = load_vae_for(self.project, self.device)
        offload = self.offload
        if offload is None:
            sizes = [module_bytes(m) for m in experts.values()]
            resident = sum(
                module_bytes(m) for m in experts.values() if module_device(m) == self.device
            )
            offload = needs_offload(sizes, self.device, resident=resident)
        frames, note = clip_frames(s.frames)
        if note and not self._noted:
            log.warning(note)
            self._noted = True
        settings = {  # what a sample depends on besides the models: the base row's identity
            "seed": s.seed,
            "steps": s.steps,
            "size": [s.width, s.height],
            "frames": frames,
            "guidance": guidance_scales(config, self.names),
            "shift": s.shift,
        }
        first_frame = start_image(self.project, None, s.width, s.height)  # I2V only
        if first_frame is not None:
            settings["image"] = s.image
        spec = RenderSpec(
            contexts=self._contexts,
            seeds=[s.seed] * len(self.prompts),  # the same noise every epoch (pipeline.py)
            negative=self._negative,
            steps=s.steps,
            width=s.width,
            height=s.height,
            guidance=settings["guidance"],
            shift=s.shift,
            boundary=config.boundary if len(self.names) == 2 else None,
            frames=frames,
            image=first_frame,
        )
        base_due = not self._base_rendered and not self._base_on_disk(settings)
        renders: list[tuple[float | None, list]] = []  # (strength | None for base, clips)
        try:
            faults.point("sample", expert)  # test hook (faults.py): inert unless asked
            for strength in [None] * base_due + list(s.strengths):
                set_lora_multiplier(model, 0.0 if strength is None else strength)
                clips = render(
                    experts, self._vae, spec, device=self.device, dtype=dtype, offload=offload
                )
                renders.append((strength, clips))
        finally:
            set_lora_multiplier(model, 1.0)
            # the base models and the VAE wait on the CPU; the trained model goes back
            for module in experts.values():
                if module is not model:
                    module.to("cpu")
            self._vae.to("cpu")
            move_unless_streamed(model, train_device)  # a block-swapped model never moved
            model.train(was_training)
            free_device_memory(self.device)
        writer = self._writer(expert)
        fps = video_fps(config.task)
        paths = []
        for strength, clips in renders:
            for i, (prompt, clip) in enumerate(zip(self.prompts, clips, strict=True)):
                info = settings | {"prompt": prompt, "prompt_index": i}
                if strength is None:
                    info |= {"kind": "training_base", "strengths": dict.fromkeys(self.names, 0.0)}
                    stem = self.layout.training_base_stem(i, s.seed)
                else:
                    info |= {
                        "kind": "training",
                        "expert": expert,
                        "epoch": epochs_done,
                        "strength": strength,
                        "strengths": {n: (strength if n == expert else 0.0) for n in self.names},
                    }
                    stem = self.layout.training_sample_stem(
                        expert, epochs_done, i, s.seed, strength
                    )
                saved = save_sample(clip, self.layout.samples_dir, stem, info, fps=fps)
                (self.base_saved if strength is None else paths).append(saved.image)
                if writer is not None:
                    tag = f"samples/p{i:02d}" + (
                        "" if strength in (None, 1.0) else f"_s{strength:g}"
                    )
                    step = 0 if strength is None else epochs_done  # the base models: step 0
                    writer.add_image(tag, np.asarray(clip[0]), step, dataformats="HWC")
        self._base_rendered = self._base_rendered or base_due
        self.saved.extend(paths)
        return paths

    def _base_on_disk(self, settings: dict) -> bool:
        """Whether every prompt's base sample exists with these settings (a resumed run)."""
        for i, prompt in enumerate(self.prompts):
            png = self.layout.sample_file(
                self.layout.training_base_stem(i, settings["seed"]), ".png"
            )
            info = read_png_info(png) if png.exists() else {}
            wanted = settings | {"prompt": prompt, "kind": "training_base"}
            if any(info.get(k) != v for k, v in wanted.items()):
                return False
        self._base_rendered = True
        return True

    def _sample_ti2v(self, expert, epochs_done, model, dtype, train_device, was_training):
        s = self.project.config.sample
        if self._vae is None:
            self._vae = load_vae_for(self.project, self.device)
        image = sample_image_path(self.project, None)
        spec = Ti2vSpec(
            contexts=self._contexts,
            seeds=[s.seed] * len(self.prompts),
            negative=self._negative,
            steps=s.steps,
            width=s.width,
            height=s.height,
            frames=s.frames,
            guidance_scale=guidance_scales(self.project.config, self.names)[expert],
            shift=s.shift,
            image=fit_image(image, s.width, s.height) if image is not None else None,
        )
        set_lora_multiplier(model, 1.0)
        try:
            faults.point("sample", expert)  # test hook (faults.py): inert unless asked
            videos = render_ti2v(model, self._vae, spec, device=self.device, dtype=dtype)
        finally:
            self._vae.to("cpu")
            model.to(train_device)
            model.train(was_training)
            free_device_memory(self.device)
        writer = self._writer(expert)
        paths = []
        for i, (prompt, video) in enumerate(zip(self.prompts, videos, strict=True)):
            info = {
                "kind": "training",
                "expert": expert,
                "epoch": epochs_done,
                "prompt": prompt,
                "prompt_index": i,
                "seed": s.seed,
                "strengths": {expert: 1.0},
                "steps": s.steps,
                "size": [s.width, s.height],
                "frames": s.frames,
                "image": str(image) if image is not None else None,
            }
            stem = self.layout.training_sample_stem(expert, epochs_done, i, s.seed)
            paths.append(save_ti2v_sample(video, self.layout.samples_dir, stem, info))
            if writer is not None:  # the last frame: what the video arrives at
                writer.add_image(f"samples/p{i:02d}", video[-1], epochs_done, dataformats="HWC")
        self.saved.extend(paths)
        return paths

    def _encode(self) -> None:
        if self._contexts is not None:
            return
        # on the GPU when the encoder fits beside the training model, else the CPU (encode_prompts)
        prompts = [*self.prompts, DEFAULT_NEGATIVE_PROMPT]
        encoded = encode_prompts(self.project, prompts, self.device)
        self._contexts, self._negative = encoded[:-1], encoded[-1]

    def _compute_dtype(self, expert: str) -> torch.dtype:
        """The dtype training computes in for `expert` (the file's, as the loop decides)."""
        path = dit_path(self.project, expert)
        mixed = self.project.config.training.mixed_precision
        return compute_dtype(mixed, infer_dit_info(path).file_dtype, path)

    def _base_model(self, name: str, dtype: torch.dtype) -> torch.nn.Module:
        """The other expert's base DiT, loaded as training loads it, kept on the CPU."""
        if name not in self._base:
            self._base.clear()  # at most one other expert is ever needed at a time
            self._base[name], _info = load_dit(
                dit_path(self.project, name),
                dtype=dtype,
                device="cpu",
                fp8_round=self.project.config.training.fp8_base,
                task=self.project.config.dit_task,
            )
        return self._base[name]

    # --- tensorboard -----------------------------------------------------------------------

    def _writer(self, expert: str):
        if expert not in self._writers:
            try:  # tensorboard is an optional dependency: imported only when a writer is made
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._writers[expert] = None
            else:
                self._writers[expert] = SummaryWriter(log_dir=str(self.log_dir / expert))
        return self._writers[expert]

    def close(self) -> None:
        """Close the tensorboard writers and drop the cached models."""
        for writer in self._writers.values():
            if writer is not None:
                writer.close()
        self._writers.clear()
        self._base.clear()
        self._vae = None
        free_device_memory(self.device)
