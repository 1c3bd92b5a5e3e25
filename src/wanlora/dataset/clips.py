"""Which clips a video gives, exactly as musubi-tuner's video dataset cuts them (pure logic).

Sources: musubi-tuner v0.3.4 `dataset/image_video_dataset.py` VideoDataset (target_frames
rounding, the five `frame_extraction` modes, item names) and `dataset/media_utils.py`
`load_video` (frame-rate conversion), summarised in WAN22_MODELS.md section 9.

1. Frame-rate conversion (`source_fps` set): frames are dropped to the target rate (16 fps
   for every Wan task, 24 for ti2v-5B). As musubi's loop: a running sum starts at 0.0 and
   grows by target/source after each frame; a frame is kept when int(sum) differs from the
   last kept frame's. (The running float sum, not i*target/source: at 30 fps the two differ
   from frame 15 on, e.g. the sum keeps frame 16 where the product would keep 15.) A slower
   source is never padded: every frame is kept. `source_fps` unset: every frame is used.
2. `head` (and `uniform` with frame_sample 1, which musubi turns into head) reads only up to
   max(target_frames) converted frames; the limit is checked against int(sum), so with a
   source slower than the target fewer frames are read (musubi's behaviour, kept).
3. Clips per target N of the F frames read: head [0, N); chunk [i, i+N) for i = 0, N, 2N..
   while i+N <= F; slide starts 0, stride, 2*stride.. while start+N <= F; uniform
   frame_sample starts numpy.linspace(0, F-N, frame_sample) as int; full one clip [0, M),
   M = min(F, max_frames) rounded down to 4n+1 (target_frames unused). A target longer than
   F gives no clip. Uniform can repeat a start; musubi then writes the same cache file twice
   and trains it once, so repeats are dropped here.
4. A clip is named `{stem}_{start:05d}-{N:03d}` (start in converted frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXTRACTIONS = ("head", "chunk", "slide", "uniform", "full")
DEFAULT_MAX_FRAMES = 129
WAN_FPS = 16.0
TI2V_5B_FPS = 24.0  # the 5B model's config (WAN22_MODELS.md section 7)
VAE_FRAME_STRIDE = 4  # clips are 4n+1 frames long


def target_fps_for_task(task: str) -> float:
    """The frame rate videos are converted to for a training task."""
    return TI2V_5B_FPS if task.startswith("ti2v-5B") else WAN_FPS


def latent_tokens(width: int, height: int, frames: int, task: str = "t2v-A14B") -> int:
    """The DiT's sequence length for a (W, H, frames) bucket: latent frames 1 + (F-1)//4 times
    (H/s) * (W/s), s = VAE stride x the 2x2 patch: 16 (Wan 2.1 VAE), 32 (ti2v-5B's Wan 2.2 VAE)."""
    step = 32 if task.startswith("ti2v-5B") else 16
    return (1 + (frames - 1) // VAE_FRAME_STRIDE) * (height // step) * (width // step)


def round_frames(frames: int) -> int:
    """`frames` rounded down to 4n+1 (1, 5, 9, ..., 81, ...)."""
    return (frames - 1) // VAE_FRAME_STRIDE * VAE_FRAME_STRIDE + 1


def round_target_frames(values) -> tuple[int, ...]:
    """musubi's target_frames: each value rounded down to 4n+1, deduplicated, sorted."""
    return tuple(sorted({round_frames(int(v)) for v in values}))


@dataclass(frozen=True)
class FrameSettings:
    """A video dataset's frame settings, under musubi-tuner's key names and defaults."""

    target_frames: tuple[int, ...] = (1,)
    frame_extraction: str = "head"
    frame_stride: int = 1
    frame_sample: int = 1
    max_frames: int = DEFAULT_MAX_FRAMES
    source_fps: float | None = None

    @property
    def targets(self) -> tuple[int, ...]:
        return round_target_frames(self.target_frames)

    @property
    def longest(self) -> int:
        """The longest clip these settings cut, in frames (a video may give shorter ones)."""
        return round_frames(self.max_frames) if self.extraction == "full" else max(self.targets)

    @property
    def extraction(self) -> str:
        """The mode really used: uniform with frame_sample 1 is head, as in musubi."""
        if self.frame_extraction == "uniform" and self.frame_sample == 1:
            return "head"
        return self.frame_extraction

    @property
    def read_limit(self) -> int | None:
        """How many converted frames are read (head only); None: the whole video."""
        return max(self.targets) if self.extraction == "head" else None

    def validate(self) -> list[str]:
        """Problems with these settings, each a phrase naming the key (empty when fine)."""
        problems = []
        if not self.target_frames:
            problems.append("target_frames is empty (write e.g. target_frames = [1, 25, 45])")
        elif any(int(f) < 1 for f in self.target_frames):
            problems.append(f"target_frames {list(self.target_frames)} must all be at least 1")
        if self.frame_extraction not in EXTRACTIONS:
            problems.append(
                f"frame_extraction {self.frame_extraction!r} is not one of {', '.join(EXTRACTIONS)}"
            )
        for key in ("frame_stride", "frame_sample", "max_frames"):
            if getattr(self, key) < 1:
                problems.append(f"{key} = {getattr(self, key)} must be at least 1")
        if self.source_fps is not None and not self.source_fps > 0:
            problems.append(f"source_fps = {self.source_fps} must be above 0 (e.g. 30.0)")
        return problems


def converted_frames(
    frame_count: int,
    source_fps: float | None,
    target_fps: float = WAN_FPS,
    limit: int | None = None,
) -> list[int]:
    """The source frame indices the trainer keeps, in order (see the module docstring, 1-2)."""
    if source_fps is None:
        return list(range(frame_count if limit is None else min(frame_count, limit)))
    delta = target_fps / source_fps  # e.g. 16 / 30 = 0.5333...
    position, previous, kept = 0.0, -1, []
    for index in range(frame_count):
        target_index = int(position)
        position += delta
        if target_index == previous:  # dropped
            continue
        previous = target_index
        if limit is not None and target_index >= limit:
            break
        kept.append(index)
    return kept


def clip_spans(frame_count: int, settings: FrameSettings) -> list[tuple[int, int]]:
    """(start, frames) of every clip of a video of `frame_count` (converted, read) frames."""
    spans: list[tuple[int, int]] = []
    mode = settings.extraction
    if mode == "full":
        length = round_frames(min(frame_count, settings.max_frames))
        return [(0, length)] if length >= 1 else []
    for n in settings.targets:
        if n > frame_count:
            continue
        if mode == "head":
            spans.append((0, n))
        elif mode == "chunk":
            spans += [(i, n) for i in range(0, frame_count - n + 1, n)]
        elif mode == "slide":
            spans += [(i, n) for i in range(0, frame_count - n + 1, settings.frame_stride)]
        elif mode == "uniform":
            starts = np.linspace(0, frame_count - n, settings.frame_sample, dtype=int)
            spans += [(int(i), n) for i in starts]
        else:
            raise ValueError(f"unknown frame_extraction {mode!r}")
    return list(dict.fromkeys(spans))  # uniform may repeat a start: one clip, as trained


def clip_name(stem: str, start: int, frames: int) -> str:
    return f"{stem}_{start:05d}-{frames:03d}"


@dataclass(frozen=True)
class Clip:
    """One training clip: `frame_count` frames of `source` starting at converted frame `start`."""

    source: Path
    start: int
    frame_count: int
    frame_indices: tuple[int, ...]  # the source's frames (decode order) that make the clip

    @property
    def name(self) -> str:
        return clip_name(Path(self.source).stem, self.start, self.frame_count)


def video_clips(
    source: Path, frame_count: int, settings: FrameSettings, target_fps: float = WAN_FPS
) -> list[Clip]:
    """Every clip of a video with `frame_count` decodable frames, in the trainer's order."""
    kept = converted_frames(frame_count, settings.source_fps, target_fps, settings.read_limit)
    return [
        Clip(Path(source), start, n, tuple(kept[start : start + n]))
        for start, n in clip_spans(len(kept), settings)
    ]
