"""The report after a real tiny training run with video samples, a validation log and a
verdict: the grid, the curves, the costs, and every image and video loading in Chromium."""

from __future__ import annotations

import json
import re

import pytest
import torch

from test_report import chromium, run_chromium, write_logs
from wanlora.demo import create_demo_project
from wanlora.outputs import OutputLayout
from wanlora.recipes import load_project
from wanlora.report import build_report
from wanlora.report.data import expert_performance, read_scalars
from wanlora.report.validation import ValidationPoint
from wanlora.run.experts import train_project
from wanlora.sampling.epoch_samples import TrainingMonitor
from wanlora.sampling.sample import sample_project

CPU = torch.device("cpu")
KEEP_ITEMS = 3  # a few dataset images: the run takes seconds, not minutes
PROBE = """<script>
function probe() {
  const images = [...document.images];
  const videos = [...document.querySelectorAll("video")];
  const out = document.createElement("pre");
  out.id = "__probe";
  out.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.alt),
    videos: videos.map((v) => ({ready: v.readyState, error: v.error ? v.error.code : null,
      width: v.videoWidth, muted: v.muted, loop: v.loop, autoplay: v.autoplay})),
    sections: [...document.querySelectorAll("section")].map((s) => s.id),
  });
  document.body.appendChild(out);
}
window.addEventListener("load", () => {
  const videos = [...document.querySelectorAll("video")];
  const settled = (v) => v.readyState >= 2 || v.error;
  const started = Date.now();
  const wait = () => (videos.every(settled) || Date.now() - started > 8000)
    ? probe() : setTimeout(wait, 50);
  wait();
});</script>"""


def write_validation(layout: OutputLayout, expert: str, steps: int) -> None:
    """validation.jsonl as training's validation writes it: the base model at step 0."""
    rows = [
        {
            "expert": expert,
            "step": step,
            "epoch": epoch,
            "loss": 0.5 - 0.05 * epoch,
            "effect": 0.0 if epoch == 0 else 0.004 * epoch,
            "timesteps": [900, 950],
            "items": KEEP_ITEMS,
            "seconds": 1.5,
        }
        for epoch, step in enumerate([0, steps // 2, steps])
    ]
    path = layout.validation_log(expert)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"half a li', encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-media") / "demo"
    project = create_demo_project(root, epochs=2)
    for image in sorted(project.dataset_dir.glob("*.png"))[KEEP_ITEMS:]:
        image.unlink()
        image.with_suffix(".txt").unlink()
    text = project.config_file.read_text(encoding="utf-8")
    text = re.sub(r"steps = 4\nwidth = 64\nheight = 64\n", "", text)
    samples = "every_n_epochs = 1\nframes = 5\nstrengths = [0.5, 1.0]\nsteps = 2\n"
    samples += "width = 32\nheight = 32\n"
    project.config_file.write_text(text.replace("[sample]\n", "[sample]\n" + samples))
    project = load_project(root)
    monitor = TrainingMonitor(project, CPU)
    try:
        train_project(project, device=CPU, on_epoch_end=monitor)
    finally:
        monitor.close()
    sample_project(
        project, ["a green square"], seeds=[3], steps=2, width=32, height=32, frames=5, device=CPU
    )
    layout = OutputLayout.of(project)
    for expert in ("high", "low"):
        write_validation(layout, expert, 2 * KEEP_ITEMS)
    verdict = {
        "experts": {
            "high": {
                "effect": 0.003,
                "level": "weak",
                "text": "high-noise LoRA changes the prediction by 0.3% <low>",
                "causes": ["too few steps (6)"],
            },
            "low": {
                "effect": 0.04,
                "level": "clear",
                "text": "low-noise LoRA moves it",
                "causes": [],
            },
        }
    }
    layout.verdict.write_text(json.dumps(verdict), encoding="utf-8")
    return project, build_report(project)


def test_grid_verdict_curves_and_costs(trained):
    project, path = trained
    page = path.read_text(encoding="utf-8")
    # the verdict first, escaped
    assert page.index('<section id="verdict">') < page.index('<section id="recipe">')
    assert "0.3% &lt;low&gt;" in page and "too few steps (6)" in page
    assert 'class="level level-weak"' in page and 'class="level level-clear"' in page
    # one grid for the one prompt: base on top, then each expert's epochs; a column per strength
    grid = page[page.index('<table class="grid">') :]
    grid = grid[: grid.index("</table>")]
    labels = re.findall(r"<tr><td>([^<]+)</td>", grid)
    assert labels == [
        "base models (no LoRA)",
        "high epoch 1",
        "high epoch 2",
        "low epoch 1",
        "low epoch 2",
    ]
    assert "LoRA at 0.5" in grid and "LoRA at 1" in grid
    assert grid.count("<video") == 1 + 4 * 2  # the base once, then epochs x strengths
    for attribute in ("muted", "loop", "autoplay", "playsinline"):
        assert grid.count(f" {attribute}") == 9
    assert "Samples embedded in this page: 10 videos and 9 grid stills" in page
    # a `wanlora sample --frames 5` clip plays in the latest samples
    latest = page[page.index("<h3>Latest samples</h3>") :]
    assert latest.index("<video") < latest.index("</div>")
    # validation curves beside the training loss; costs apart from training
    assert 'alt="validation loss and LoRA effect"' in page
    assert re.search(r"sampling \d+m \d\ds \(\d+% of training\)", page)
    assert "validation 0m 09s" in page  # 2 experts x 3 points x 1.5 s (half a line skipped)
    assert "<td>4.5 s</td>" in page  # the validation column: 3 points x 1.5 s per expert


def test_report_without_validation_or_verdict_leaves_them_out(trained, tmp_path):
    project, _ = trained
    layout = OutputLayout.of(project)
    moved = {
        p: p.read_bytes()
        for p in [layout.verdict] + [layout.validation_log(e) for e in ("high", "low")]
    }
    for p in moved:
        p.unlink()
    try:
        page = build_report(project, tmp_path / "r.html").read_text(encoding="utf-8")
    finally:
        for p, data in moved.items():
            p.write_bytes(data)
    assert 'id="verdict"' not in page and "validation loss and LoRA effect" not in page
    assert "validation —" in page
    assert '<table class="grid">' in page


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_every_image_and_video_loads_in_chromium(trained, tmp_path):
    _project, path = trained
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    dom = run_chromium(["--dump-dom", probed.as_uri()], tmp_path / "profile-dom")
    match = re.search(r'<pre id="__probe">(.*?)</pre>', dom.stdout)
    assert match, dom.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["sections"][0] == "verdict"
    assert probe["images"] == KEEP_ITEMS + 4 and probe["broken"] == []  # thumbs, 4 plots
    assert len(probe["videos"]) == 10
    for video in probe["videos"]:
        assert video["error"] is None and video["ready"] >= 2 and video["width"] == 32, video
        assert video["muted"] and video["loop"] and video["autoplay"]

    # the real page, without the probe: no console errors, no failed loads
    shot = tmp_path / "report.png"
    result = run_chromium(
        ["--window-size=1280,2000", f"--screenshot={shot}", path.as_uri()], tmp_path / "profile"
    )
    assert shot.exists(), result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert "ERR_" not in result.stderr


def test_seconds_per_step_is_training_alone(tmp_path):
    """Validation between logged steps is not training time; the base model's (step 0,
    before the first step) and the last one's (after the last logged step) fall outside."""
    project = create_demo_project(tmp_path / "demo", epochs=2)
    write_logs(project)  # 36 steps, 2 s apart
    logs = {e: read_scalars(project.output_dir / "logs" / e) for e in ("high", "low")}
    plain = {p.expert: p for p in expert_performance(project, logs)}
    assert plain["high"].seconds_per_step == pytest.approx(2.0)
    assert plain["high"].validation_seconds is None
    points = [ValidationPoint("high", step, 0, 0.5, 0.0, 7.0) for step in (0, 18, 36)]
    checked = {p.expert: p for p in expert_performance(project, logs, {"high": points})}
    assert checked["high"].seconds_per_step == pytest.approx((70 - 7) / 35)
    assert checked["high"].validation_seconds == pytest.approx(21.0)
    assert checked["low"].seconds_per_step == pytest.approx(2.0)
