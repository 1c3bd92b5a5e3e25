"""Draw the tutorial's figures into docs/images/ (run once: `python3 docs/make_images.py`).

Every number comes from wanlora itself: the timestep distributions are sampled with
`wanlora.train.timesteps.sample_timesteps` from the recipe's settings, the learning-rate
curves with `wanlora.train.schedule.lr_schedule`, the buckets with `wanlora.dataset.buckets`.
CPU only, a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from wanlora.dataset.buckets import make_buckets, select_bucket  # noqa: E402
from wanlora.recipes import load_recipe  # noqa: E402
from wanlora.train.schedule import lr_schedule  # noqa: E402
from wanlora.train.timesteps import sample_timesteps  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"
HIGH = "#c0392b"
LOW = "#2471a3"
DPI = 100
SAMPLES = 200_000


def experts_and_timesteps(path: Path) -> None:
    """Top: who denoises which part of the trajectory. Bottom: the recipe's training t per expert."""
    config = load_recipe("wan22-t2v")
    generator = torch.Generator().manual_seed(config.training.seed)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 5.6), gridspec_kw={"height_ratios": [1, 2.3]}, constrained_layout=True
    )
    boundary = config.boundary * 1000

    # the split, drawn in the direction generation runs: from noise (1000) to image (0)
    top.add_patch(Rectangle((boundary, 0), 1000 - boundary, 1, color=HIGH, alpha=0.85))
    top.add_patch(Rectangle((0, 0), boundary, 1, color=LOW, alpha=0.85))
    top.text(
        (1000 + boundary) / 2, 0.5, "high-noise\nexpert", ha="center", va="center", color="white"
    )
    top.text(
        boundary / 2,
        0.5,
        "low-noise expert: from rough layout to finished detail",
        ha="center",
        va="center",
        color="white",
    )
    top.axvline(boundary, color="black", lw=2)
    top.text(
        boundary - 8,
        1.1,
        f"boundary {boundary:.0f} (t = {config.boundary})",
        ha="left",
        va="bottom",
        fontsize=9,
    )
    top.set_xlim(1000, 0)  # generation starts at pure noise (1000) and ends at the image (0)
    top.set_ylim(0, 1.6)
    top.set_yticks([])
    top.set_xlabel("timestep (1000 = pure noise, 0 = clean image); sampling runs left to right")
    top.set_title("Wan 2.2 T2V A14B: two 14B experts, each owns a range of timesteps")
    for spine in ("top", "right", "left"):
        top.spines[spine].set_visible(False)

    for name, color in (("high", HIGH), ("low", LOW)):
        expert = config.experts[name]
        t = sample_timesteps(
            SAMPLES, config.timesteps, expert.min_timestep, expert.max_timestep, generator
        )
        bottom.hist(
            t.numpy() * 1000,
            bins=200,
            range=(0, 1000),
            density=False,
            color=color,
            alpha=0.85,
            label=f"{name}-noise LoRA: {expert.min_timestep}-{expert.max_timestep}, "
            f"median {t.median().item() * 1000:.0f}",
        )
    bottom.axvline(boundary, color="black", lw=2)
    bottom.set_xlim(1000, 0)
    bottom.set_yticks([])
    bottom.set_ylabel("how often trained")
    bottom.set_xlabel("training timestep (1000 t)")
    bottom.set_title(
        "What each LoRA trains on: logit-normal t (shift 1.0), cut to the expert's range "
        "(preserve_distribution_shape)",
        fontsize=10,
    )
    bottom.legend(loc="upper right", frameon=False)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def lr_schedules(path: Path) -> None:
    """The polynomial schedule of the Wan 2.2 recipe (power 8) and of Wan 2.1 (power 4)."""
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    for name, color in (("wan22-t2v", HIGH), ("wan21-t2v", "#7f8c8d")):
        config = load_recipe(name)
        steps = 1800
        lrs = lr_schedule(config.scheduler, config.optimizer.learning_rate, steps)
        ax.plot(
            range(steps),
            lrs,
            color=color,
            lw=2,
            label=f"{name}: polynomial, power {config.scheduler.lr_scheduler_power:g}",
        )
    ax.axhline(3e-4 * 5e-5, color="black", ls=":", lw=1)
    ax.text(
        1790,
        3e-4 * 5e-5 * 1.6,
        "3e-4 x min_lr_ratio 5e-5 = 1.5e-8 (never reached: ignored)",
        ha="right",
        fontsize=8,
    )
    ax.text(1790, 1e-7 * 1.6, "lr_end 1e-7: where the lr really ends", ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(5e-9, 6e-4)
    ax.set_xlim(0, 1800)
    ax.set_xlabel("optimiser step (18 images x 100 epochs = 1800 per expert)")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate per step, from lr 3e-4")
    ax.legend(frameon=False, loc="upper right")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def buckets(path: Path) -> None:
    """The 960x960 buckets, with where some common image sizes land."""
    fig, ax = plt.subplots(figsize=(8, 6.4), constrained_layout=True)
    all_buckets = make_buckets((960, 960))
    for w, h in all_buckets:
        ax.add_patch(Rectangle((0, 0), w, h, fill=False, lw=0.5, color="#95a5a6"))
    examples = [(1024, 1024), (1024, 768), (1920, 1080), (1000, 1500), (2000, 500)]
    colors = ["#c0392b", "#27ae60", "#2471a3", "#8e44ad", "#d35400"]
    for (w, h), color in zip(examples, colors, strict=True):
        bw, bh = select_bucket(w, h, (960, 960))
        ax.add_patch(
            Rectangle(
                (0, 0),
                bw,
                bh,
                fill=False,
                lw=2.2,
                color=color,
                label=f"{w}x{h} image -> {bw}x{bh} bucket",
            )
        )
    ax.set_xlim(0, 2000)
    ax.set_ylim(0, 2000)
    ax.set_aspect("equal")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title(
        f"resolution [960, 960]: {len(all_buckets)} buckets of about 960x960 pixels (grey)",
        fontsize=11,
    )
    ax.legend(loc="upper right", frameon=False, fontsize=9)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    experts_and_timesteps(OUT / "experts_timesteps.png")
    lr_schedules(OUT / "lr_schedule.png")
    buckets(OUT / "buckets.png")
    for png in sorted(OUT.glob("*.png")):
        print(f"{png} ({png.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
