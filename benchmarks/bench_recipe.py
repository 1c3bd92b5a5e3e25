"""The whole recipe timed end to end: `wanlora cache` + `wanlora train`, real-size files.

Writes once into DIR (kept and reused): one 28.6 GB fp16 DiT file in the real 14B expert
layout (random values) that both experts read, the low expert through a second path (a
symlink); umT5-xxl at real size (.pth, bf16, 11.4 GB, the real key layout); the Wan 2.1 VAE
at real size (.safetensors, bf16); the tiny test tokenizer (the real one cannot be made up:
captions tokenize into other pieces, so their lengths differ from umT5's own); the demo's 18
captioned images at 960x960. The project is the wan22-t2v recipe with fewer epochs and one
epoch-end sample (its default 30 steps at 960x960) at the last epoch.

Then runs, each as a user's shell would, timing every output line:
    wanlora cache DIR [--max-vram N]     caching: umT5 + VAE over the 18 images (umT5 on
                                         the CPU where it does not fit N GiB)
    wanlora train DIR --restart --overwrite [--max-vram N] [--expert E]
and reads the run's TensorBoard logs (per-step wall times, sample seconds) to split the
train command into phases per expert: load (file -> GPU, plan, LoRA), compile + warm-up +
CUDA-graph capture (to the 4th step), training steps, epoch-end samples, saving. The total
is projected to the recipe's 100 epochs (1800 steps per expert, no samples: the recipe
renders none during training) from the warm s/step.

OUT/recipe.json is rewritten (atomically) as each phase ends, and each phase is printed as one
line when it ends: files written, the cache command, each expert (when the next one starts,
its logs complete, or when the command ends), then the totals. `status` is "running" until
the end ("complete"); a run cut by an outer `timeout` (SIGTERM) or Ctrl-C stops the wanlora
command it runs (which saves its state and closes its logs), records what the expert in
progress did (marked "cut"), says "cut (SIGTERM)", and keeps every phase it finished.

    PYTHONPATH=src python3 benchmarks/bench_recipe.py --dir /tmp/recipe --out OUT --epochs 2
    PYTHONPATH=src python3 benchmarks/bench_recipe.py --dir /tmp/recipe --out OUT --epochs 1 \
        --max-vram 16 --expert low                  # block swap, one expert
    python3 benchmarks/bench_recipe.py --tiny --dir /tmp/r --device cpu   # the smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

UMT5_XXL = dict(d_ff=10240, num_heads=64, num_layers=24)  # d_model: the DiT text_dim, 4096
UMT5_XXL_VOCAB = 256384
WAN21_VAE_BASE_DIM = 96
RECIPE_EPOCHS = 100
IMAGES = 18
WARM_AFTER = 3  # a graphed step's first 3 steps are warm-ups, the 4th is captured
PROMPT = "flat demo shapes, a red circle on a blue background"
EXPERT_STARTED = re.compile(r"\b(\w+): CUDA graph ")  # train/setup.py, once per expert


def write_pth(path: Path, layout: dict[str, tuple[int, ...]], dtype=torch.bfloat16) -> None:
    """A torch.save state dict of `layout` filled from one random pool (memory-bound)."""
    from wanlora.fsutil import atomic_path

    pool = (torch.randn(1 << 24, generator=torch.Generator().manual_seed(3)) * 0.02).to(dtype)
    state = {}
    for name, shape in layout.items():
        tensor = torch.empty(shape, dtype=dtype)
        flat = tensor.view(-1)
        for start in range(0, flat.numel(), pool.numel()):
            n = min(pool.numel(), flat.numel() - start)
            flat[start : start + n].copy_(pool[:n])
        state[name] = tensor
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_models(models: Path, tiny: bool) -> dict[str, str]:
    """The model files (module docstring); existing ones of the right size are kept."""
    from diffusers import AutoencoderKLWan

    from bench_load import expected_size, expert_layout, write_dit_file
    from wanlora.models.assign import build_on_meta
    from wanlora.models.tiny import (
        tiny_dit_layout,
        tiny_umt5_layout,
        tiny_vae_layout,
        write_tiny_tokenizer,
    )
    from wanlora.models.vae import LATENT_CHANNELS, diffusers_vae_key_to_wan

    models.mkdir(parents=True, exist_ok=True)
    tokenizer = models / "umt5-tiny-tokenizer"
    vocab = write_tiny_tokenizer(tokenizer) if not tokenizer.is_dir() else None
    dit = models / "wan2.2_t2v_random_fp16.safetensors"
    layout = tiny_dit_layout() if tiny else expert_layout()
    if not dit.is_file() or dit.stat().st_size != expected_size(layout):
        write_dit_file(dit, layout)
    low = models / "wan2.2_t2v_low_same_file.safetensors"
    if not low.exists():
        low.symlink_to(dit.name)
    vae = models / "wan_2.1_vae_random.safetensors"
    if tiny:
        vae_layout = tiny_vae_layout()
    else:
        meta = build_on_meta(
            lambda: AutoencoderKLWan(base_dim=WAN21_VAE_BASE_DIM, z_dim=LATENT_CHANNELS)
        )
        vae_layout = {diffusers_vae_key_to_wan(n): tuple(p.shape) for n, p in meta.named_parameters()}
    if not vae.is_file() or vae.stat().st_size != expected_size(vae_layout, torch.bfloat16):
        write_dit_file(vae, vae_layout, torch.bfloat16)  # any layout: a safetensors writer
    umt5 = models / "models_t5_umt5-xxl-random-enc-bf16.pth"
    if not umt5.is_file():
        if vocab is None:
            vocab = len(__import__("transformers").AutoTokenizer.from_pretrained(str(tokenizer)))
        sizes = {} if tiny else UMT5_XXL
        text_dim = layout["text_embedding.0.weight"][1]
        vocab_size = vocab if tiny else UMT5_XXL_VOCAB
        write_pth(umt5, tiny_umt5_layout(vocab_size, text_dim, **sizes))
    return {
        "dit_high": dit.name,
        "dit_low": low.name,
        "vae": vae.name,
        "text_encoder": umt5.name,
        "tokenizer": tokenizer.name,
    }


def project_toml(
    epochs: int, resolution: int, models: dict[str, str], sample: int, steps: int = 30
) -> str:
    from wanlora.demo import models_toml

    paths = {k: f"models/{v}" for k, v in models.items()}
    return f"""\
# bench_recipe.py: the wan22-t2v recipe at real size (random weights), {epochs} epoch(s).
recipe = "wan22-t2v"

[project]
name = "Recipe_v1"
author = "wanlora"
trigger = "flat demo shapes"

[dataset]
resolution = [{resolution}, {resolution}]

[training]
max_train_epochs = {epochs}
save_every_n_epochs = {epochs}

{models_toml(paths)}
[sample]
prompts = ["{PROMPT}"]
every_n_epochs = {epochs}
steps = {steps}
width = {sample}
height = {sample}
"""


def write_project(
    root: Path, *, epochs: int, tiny: bool, images: int, sample_steps: int = 30
) -> Path:
    from PIL import Image

    from wanlora.demo import write_demo_dataset
    from wanlora.fsutil import atomic_write_text

    resolution = 64 if tiny else 960
    models = write_models(root / "models", tiny)
    dataset = root / "dataset"
    if not any(dataset.glob("*.png")):
        for image_path in write_demo_dataset(dataset, count=images):
            with Image.open(image_path) as image:
                square = image.convert("RGB").resize((resolution, resolution))
            square.save(image_path)
    text = project_toml(epochs, resolution, models, 32 if tiny else 960, sample_steps)
    atomic_write_text(root / "wanlora.toml", text)
    return root


class Cut(BaseException):
    """The bench was told to stop (SIGTERM from an outer timeout, or Ctrl-C)."""


class Progress:
    """OUT/recipe.json, rewritten atomically after each phase: a cut run keeps what it did."""

    def __init__(self, path: Path, **fields):
        self.path = path
        self.result: dict = {"status": "running", **fields}
        self.write()

    def phase(self, key: str, value, line: str | None = None) -> None:
        self.result[key] = value
        print(f"phase {key}: {line or value}", flush=True)
        self.write()

    def write(self) -> None:
        from wanlora.fsutil import atomic_write_text

        atomic_write_text(self.path, json.dumps(self.result, indent=1))


def run_timed(
    args: list[str], log: Path, env: dict, on_line=None
) -> tuple[float, list[tuple[float, str]]]:
    """Run `wanlora ARGS`; (seconds, [(wall time, line)]) with each line's arrival time.
    `on_line(lines)` sees the list after each line; a Cut stops the command first."""
    cmd = [sys.executable, "-u", "-c", "from wanlora.cli import main; main()", *args]
    start = time.time()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          text=True, bufsize=1) as proc, open(log, "w") as out:  # fmt: skip
        try:
            for line in proc.stdout:
                lines.append((time.time(), line.rstrip("\n")))
                out.write(f"{time.time() - start:9.2f} {line}")
                out.flush()
                if on_line is not None:
                    on_line(lines)
        except BaseException:
            stop(proc)
            raise
    if proc.returncode:
        tail = "\n".join(text for _, text in lines[-30:])
        raise RuntimeError(f"wanlora {' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return time.time() - start, lines


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (wanlora saves its state and exits), SIGKILL after a minute."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def first_line(lines, *needles: str) -> float | None:
    return next((t for t, text in lines if all(n in text for n in needles)), None)


def expert_phases(root: Path, expert: str, lines, after: float) -> dict:
    """One expert's phases from its TensorBoard scalars and the train command's lines."""
    from wanlora.outputs import OutputLayout
    from wanlora.recipes import load_project
    from wanlora.report.data import read_scalars

    project = load_project(root)
    scalars = read_scalars(OutputLayout.of(project).logs_dir(expert))
    loss = scalars["loss"]
    walls = loss.wall_times
    samples = scalars.get("perf/sample_seconds")
    sample_s = list(samples.values) if samples else []
    ready = first_line(lines, f"{expert}: CUDA graph") or after
    gaps = [b - a for a, b in zip(walls[WARM_AFTER:], walls[WARM_AFTER + 1 :], strict=False)]
    warm = statistics.median(gaps) if gaps else None
    end = max([walls[-1]] + (list(samples.wall_times) if samples else []))
    # GPU peaks (GiB): each epoch's training (with validation), and the samples' own
    peaks = {
        key: max(scalars[tag].values)
        for key, tag in (("train_peak_gib", "perf/peak_vram_gib"),
                         ("sample_peak_gib", "perf/sample_peak_vram_gib"))
        if tag in scalars
    }  # fmt: skip
    return {
        "steps": len(walls),
        "load_s": round(ready - after, 1),  # file -> device, plan, LoRA, optimiser
        "to_warm_step_s": round(walls[min(WARM_AFTER, len(walls) - 1)] - ready, 1),
        "warm_s_per_step": round(warm, 4) if warm else None,
        "steps_s": round(walls[-1] - walls[min(WARM_AFTER, len(walls) - 1)], 1),
        "samples_s": [round(s, 1) for s in sample_s],
        "end": end,
        "plan_lines": [text for t, text in lines if "speed:" in text and t >= after][:1],
        **{key: round(value, 2) for key, value in peaks.items()},
    }


def measure(
    root: Path, device: str, max_vram: float | None, only: list[str] | None, out: Path,
    progress: Progress,
) -> dict:  # fmt: skip
    env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")
    vram = ["--max-vram", str(max_vram)] if max_vram else []  # the card's size, for both
    cache_s, _ = run_timed(["cache", str(root), "--device", device, *vram], out / "cache.log", env)
    progress.phase("cache_command_s", round(cache_s, 1))
    args = ["train", str(root), "--restart", "--overwrite", "--device", device]
    args += vram
    for expert in only or []:
        args += ["--expert", expert]
    experts = only or ["high", "low"]
    phases: dict[str, dict] = {}
    progress.result["experts"] = phases
    started: list[str] = []  # experts in the order their "<expert>: CUDA graph" line came
    ends = [time.time()]  # when the train command started, then each expert ended
    seen: list = []

    def record(expert: str, lines, cut: bool = False) -> None:
        phases[expert] = expert_phases(root, expert, lines, ends[-1])
        ends.append(phases[expert].pop("end"))
        phase = phases[expert]
        if cut:
            phase["cut"] = True
        line = f"{expert}: {phase['steps']} steps, {phase['warm_s_per_step']} s/step"
        progress.phase("experts", phases, line + (" (cut)" if cut else ""))

    def on_line(lines) -> None:
        """An expert's TensorBoard logs are complete when the next one starts (its loss log
        closed, its samples flushed): its phases are recorded then."""
        seen[:] = [lines]
        started_now = EXPERT_STARTED.search(lines[-1][1])
        if started_now and started_now.group(1) not in started:
            for expert in started:
                if expert not in phases:
                    record(expert, lines)
            started.append(started_now.group(1))

    try:
        train_s, lines = run_timed(args, out / "train.log", env, on_line=on_line)
    except Cut:  # the command was stopped (its logs closed): what the started experts did
        for expert in started:
            if expert not in phases and seen:
                try:
                    record(expert, seen[0], cut=True)
                except Exception as exc:  # noqa: BLE001 - no steps logged yet
                    progress.phase("experts", phases, f"{expert}: cut before a step ({exc})")
        raise
    for expert in experts:
        if expert not in phases:
            record(expert, lines)
    progress.phase("train_command_s", round(train_s, 1))
    saved = first_line(lines, "trained") or time.time()
    result = progress.result
    result["total_s"] = round(cache_s + train_s, 1)
    result["after_last_expert_s"] = round(saved - ends[-1], 1)  # LoRA files, report
    result["max_vram"] = max_vram
    progress.phase("projected_recipe_min", project(result))
    return result


def project(result: dict) -> float | None:
    """The recipe's 100 epochs (18 images -> 1800 steps per expert), no samples: caching and
    each expert's load and compile as measured, 1800 steps at the warm s/step, saving."""
    total = result["cache_command_s"] + result["after_last_expert_s"]
    for phase in result["experts"].values():
        if phase["warm_s_per_step"] is None:
            return None
        steps = RECIPE_EPOCHS * IMAGES
        total += phase["load_s"] + phase["to_warm_step_s"]
        total += (steps - WARM_AFTER) * phase["warm_s_per_step"]
    return round(total / 60, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--out", type=Path)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--max-vram", type=float)
    p.add_argument("--expert", action="append", help="train only this expert (repeatable)")
    p.add_argument("--tiny", action="store_true", help="tiny models (the CPU smoke test)")
    p.add_argument("--images", type=int, default=IMAGES)
    p.add_argument("--sample-steps", type=int, default=30, help="the recipe's default: 30")
    p.add_argument("--write-only", action="store_true", help="write the files, run nothing")
    args = p.parse_args(argv)
    t0 = time.time()
    root = write_project(
        args.dir, epochs=args.epochs, tiny=args.tiny, images=args.images,
        sample_steps=args.sample_steps,
    )  # fmt: skip
    written = round(time.time() - t0, 1)
    print(f"files ready in {written} s: {root}", flush=True)
    if args.write_only:
        return 0
    out = args.out or args.dir / "bench"
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    progress = Progress(
        out / "recipe.json", files_written_s=written, epochs=args.epochs,
        torch=torch.__version__, device=device, max_vram=args.max_vram,
    )  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _cut)
    try:
        measure(root, args.device, args.max_vram, args.expert, out, progress)
    except (Cut, KeyboardInterrupt) as exc:
        progress.phase("status", f"cut ({exc.args[0] if exc.args else 'Ctrl-C'})")
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.phase("status", "complete")
    print(json.dumps(progress.result, indent=1))
    return 0


def _cut(signum, _frame) -> None:
    raise Cut(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
