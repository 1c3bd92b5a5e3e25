"""Samples during training, and the timing/memory numbers the report shows.

`TrainingMonitor` is an `on_epoch_end(expert, epochs_done, model)` callback: the run layer
(wanlora.run) builds it and hands it to the training loop, which never imports sampling.
Every epoch it records peak memory to tensorboard (output/logs/<expert>: perf/peak_vram_gib,
perf/peak_rss_gib). Every `[sample] every_n_epochs` epochs it renders
the `[sample]` prompts: the expert being trained runs with its LoRA as it is now, the other
phase of the boundary with the other expert's BASE model (loaded once, kept on the CPU
between samples). Images go to output/samples/ (train_<expert>_e<epoch>_p<i>_seed<s>.png)
and to tensorboard (samples/p<i>), with perf/sample_seconds.
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
from .pipeline import (
    DEFAULT_NEGATIVE_PROMPT,
    GIB,
    RenderSpec,
    module_bytes,
    module_device,
    needs_offload,
    render,
)
from .sample import dit_path, encode_prompts, load_vae_for, ordered_experts, save_png

log = logging.getLogger(__name__)

TEXT_ENCODER_BYTES_ESTIMATE = 12 * GIB  # umT5-xxl in bf16 plus headroom


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
            try:
                self.sample(expert, epochs_done, model)
            except torch.OutOfMemoryError:
                log.warning("%s: out of memory while sampling; samples skipped", expert)
                free_device_memory(self.device)
            if writer is not None:
                writer.add_scalar("perf/sample_seconds", time.perf_counter() - started, epochs_done)
        if writer is not None:
            writer.flush()
        if self.device.type == "cuda":  # the next epoch's peak is its own
            torch.cuda.reset_peak_memory_stats(self.device)

    # --- sampling ---------------------------------------------------------------------------

    def sample(self, expert: str, epochs_done: int, model: torch.nn.Module) -> list[Path]:
        """Render the [sample] prompts with `model` (carrying its LoRA) for `expert`'s phase."""
        config = self.project.config
        s = config.sample
        self._encode()
        dtype = self._compute_dtype(expert)
        train_device = module_device(model)
        was_training = model.training
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
        spec = RenderSpec(
            contexts=self._contexts,
            seeds=[s.seed] * len(self.prompts),
            negative=self._negative,
            steps=s.steps,
            width=s.width,
            height=s.height,
            guidance_scale=s.guidance_scale,
            shift=s.shift,
            boundary=config.boundary if len(self.names) == 2 else None,
        )
        set_lora_multiplier(model, 1.0)
        try:
            faults.point("sample", expert)  # test hook (faults.py): inert unless asked
            images = render(
                experts, self._vae, spec, device=self.device, dtype=dtype, offload=offload
            )
        finally:
            # the base models and the VAE wait on the CPU; the trained model goes back
            for module in experts.values():
                if module is not model:
                    module.to("cpu")
            self._vae.to("cpu")
            model.to(train_device)
            model.train(was_training)
            free_device_memory(self.device)
        strengths = {name: (1.0 if name == expert else 0.0) for name in self.names}
        writer = self._writer(expert)
        paths = []
        for i, (prompt, image) in enumerate(zip(self.prompts, images, strict=True)):
            info = {
                "kind": "training",
                "expert": expert,
                "epoch": epochs_done,
                "prompt": prompt,
                "prompt_index": i,
                "seed": s.seed,
                "strengths": strengths,
                "steps": s.steps,
                "size": [s.width, s.height],
            }
            stem = self.layout.training_sample_stem(expert, epochs_done, i, s.seed)
            paths.append(save_png(image, self.layout.samples_dir, stem, info))
            if writer is not None:
                writer.add_image(
                    f"samples/p{i:02d}", np.asarray(image), epochs_done, dataformats="HWC"
                )
        self.saved.extend(paths)
        return paths

    def _encode(self) -> None:
        if self._contexts is not None:
            return
        device = self.device
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            if free < TEXT_ENCODER_BYTES_ESTIMATE:
                device = torch.device("cpu")
        encoded = encode_prompts(self.project, [*self.prompts, DEFAULT_NEGATIVE_PROMPT], device)
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
