"""output/report.html: built from a project's outputs, checked in a real headless browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wanlora.demo import create_demo_project
from wanlora.report import build_report, read_scalars, smooth
from wanlora.sampling.sample import grid_image, save_png

SECTIONS = ["recipe", "dataset", "loss", "lr", "timesteps", "samples", "performance"]
PROBE = """<script>window.addEventListener("load", () => {
  const images = [...document.images];
  const probe = document.createElement("pre");
  probe.id = "__probe";
  probe.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.alt),
    sections: [...document.querySelectorAll("section")].map((s) => s.id),
    scrollHeight: document.body.scrollHeight,
  });
  document.body.appendChild(probe);
});</script>"""


def write_logs(project) -> None:
    """Tensorboard logs as training writes them (loss, lr per step; perf per epoch)."""
    from torch.utils.tensorboard import SummaryWriter

    for offset, expert in enumerate(["high", "low"]):
        writer = SummaryWriter(log_dir=str(project.output_dir / "logs" / expert))
        for step in range(1, 37):
            loss = 1.0 / (1 + step * 0.1) + 0.05 * ((step * 7) % 5) + offset * 0.2
            writer.add_scalar("loss", loss, step, walltime=1000.0 + step * 2)
            writer.add_scalar(
                "lr", 3e-4 * (1 - step / 36) ** 8 + 1e-7, step, walltime=1000.0 + step * 2
            )
        for epoch in (1, 2):
            writer.add_scalar("perf/peak_rss_gib", 1.5 + epoch * 0.1, epoch)
            writer.add_scalar("perf/sample_seconds", 3.0, epoch)
        writer.close()


def write_samples(project) -> None:
    """Samples as `wanlora sample --compare` and training write them."""
    out = project.output_dir / "samples"
    colors = [(200, 40, 40), (40, 160, 60), (40, 70, 220)]
    prompt = project.config.sample.prompts[0]
    lora = Image.new("RGB", (64, 64), colors[0])
    base = Image.new("RGB", (64, 64), colors[1])
    strengths = {"high": 1.0, "low": 1.0}
    save_png(
        lora, out, "p00_seed42_high1_low1", {"prompt": prompt, "seed": 42, "strengths": strengths}
    )
    grid = grid_image(
        [[base, lora]], ["without LoRA", "LoRA high 1, low 1"], [f"p00 seed 42: {prompt}"]
    )
    save_png(
        grid,
        out,
        "compare_seed42_high1_low1",
        {"kind": "compare", "seeds": [42], "strengths": strengths},
    )
    for expert in ("high", "low"):
        for epoch in (1, 2):
            info = {
                "kind": "training",
                "expert": expert,
                "epoch": epoch,
                "prompt": prompt,
                "prompt_index": 0,
            }
            save_png(
                Image.new("RGB", (64, 64), colors[epoch]),
                out,
                f"train_{expert}_e{epoch:04d}_p00_seed42",
                info,
            )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    project = create_demo_project(tmp_path_factory.mktemp("report") / "demo", epochs=2)
    write_logs(project)
    write_samples(project)
    return project, build_report(project)


def test_scalars_and_smoothing(report):
    project, _ = report
    scalars = read_scalars(project.output_dir / "logs" / "high")
    assert scalars["loss"].steps == list(range(1, 37))
    assert scalars["lr"].values[0] == pytest.approx(3e-4 * (35 / 36) ** 8 + 1e-7)
    assert scalars["perf/peak_rss_gib"].values == pytest.approx([1.6, 1.7])
    assert read_scalars(project.output_dir / "logs" / "nothing") == {}
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # debiased
    smoothed = smooth([0.0, 10.0])
    assert 0 < smoothed[1] < 10


def test_report_is_self_contained(report):
    project, path = report
    assert path == project.output_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    for ident in SECTIONS:
        assert f'<section id="{ident}">' in page
    # nothing fetched from anywhere: every src is a data URI, no links, no scripts
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    # the dataset table has every image with its caption; plots and samples are embedded
    assert page.count('class="thumb"') == 18
    assert "flat demo shapes, a" in page
    assert page.count('class="plot"') == 3  # loss, lr, timesteps
    assert "compare_seed42_high1_low1.png" in page
    assert "epoch 2" in page and "1.7 GiB" in page
    for uri in sources:  # every embedded image decodes
        payload = base64.b64decode(uri.split(",", 1)[1])
        assert payload[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb")


def test_report_without_training_output(tmp_path):
    project = create_demo_project(tmp_path / "demo", epochs=1)
    page = build_report(project).read_text(encoding="utf-8")
    assert "No training logs yet" in page and "No samples yet" in page
    assert page.count('class="plot"') == 1  # the timestep histogram needs no logs


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_report_in_headless_chromium(report, tmp_path):
    _project, path = report
    # a copy with a probe script that lists broken images once everything has loaded
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    dom = run_chromium(["--dump-dom", probed.as_uri()], tmp_path / "profile-dom")
    match = re.search(r'<pre id="__probe">(.*?)</pre>', dom.stdout)
    assert match, dom.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["sections"] == SECTIONS
    assert probe["images"] >= 18 + 3 + 4 and probe["broken"] == []
    assert probe["scrollHeight"] > 2000

    # the real page: no console errors, and a screenshot that is not blank
    shot = tmp_path / "report.png"
    started = time.time()
    result = run_chromium(
        ["--window-size=1280,4000", f"--screenshot={shot}", path.as_uri()],
        tmp_path / "profile-shot",
    )
    assert shot.exists(), result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert "ERR_" not in result.stderr  # no failed loads
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 4000)
    assert len(np.unique(np.asarray(image.resize((64, 200))))) > 20  # content, not blank
    assert time.time() - started < 120
