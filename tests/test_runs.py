"""The second run: edits are never ignored, earlier runs are kept, `wanlora runs` lists them.

The demo project cut to 2 images and 1 epoch (2 steps per expert), trained once for the
module; each test edits a copy the way a user would and trains again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
from pathlib import Path

import pytest

from cli_run import run_cli
from wanlora import faults
from wanlora.demo import create_demo_project
from wanlora.outputs import OutputLayout
from wanlora.recipes import load_project
from wanlora.run.history import run_lines, run_rows
from wanlora.run.plan import PlanRefused, make_plan
from wanlora.run.signals import Interrupted
from wanlora.run.training import run_training

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
import tomli_w

IMAGES = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs") / "project"
    create_demo_project(root, epochs=1)
    for image in sorted((root / "dataset").glob("*.png"))[IMAGES:]:
        image.unlink()
        image.with_suffix(".txt").unlink(missing_ok=True)
    edit_toml(root, training={"max_train_epochs": 1, "save_state_every_n_steps": 1})
    run_training(load_project(root))
    return root


@pytest.fixture
def project_dir(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "project")
    return tmp_path / "project"


def edit_toml(root: Path, **tables) -> None:
    toml = root / "wanlora.toml"
    data = tomllib.loads(toml.read_text(encoding="utf-8"))
    for name, values in tables.items():
        table = data
        for part in name.split("__"):  # experts__low -> [experts.low]
            table = table.setdefault(part, {})
        table.update(values)
    data.pop("sample", None) if "sample" not in tables else None
    toml.write_text(tomli_w.dumps(data), encoding="utf-8")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def train(root: Path, **kwargs):
    plans = []
    results = run_training(load_project(root), on_plan=plans.append, **kwargs)
    return plans[0], results


def test_edit_a_caption_and_the_lr_trains_run_2_and_keeps_run_1(project_dir, caplog):
    layout = OutputLayout.of(load_project(project_dir))
    run1 = {e: digest(layout.lora(e)) for e in ("high", "low")}
    caption = project_dir / "dataset" / "demo_00.txt"
    caption.write_text(caption.read_text() + " Edited.")
    edit_toml(project_dir, optimizer={"learning_rate": 1e-3})

    with caplog.at_level(logging.INFO, logger="wanlora"):
        plan, results = train(project_dir)
    lines = plan.lines(load_project(project_dir))
    kept = layout.kept_run(1)
    assert lines[:4] == [
        "changed since run 1 (finished):",
        "  [optimizer] learning_rate 0.0003 -> 0.001",
        "  1 caption changed (demo_00.txt)",
        "[optimizer] learning_rate 0.0003 -> 0.001; 1 caption changed (demo_00.txt): "
        f"starting run 2; run 1 is kept in {kept.root}",
    ]
    assert "encoding 1 caption(s) with umT5" in caplog.messages  # one text embedding
    assert not any("with the VAE" in m for m in caplog.messages)  # no latent
    assert [(r.expert, r.steps, r.skipped) for r in results] == [("high", 2, False), ("low", 2, False)]
    for expert in ("high", "low"):
        assert digest(kept.lora(expert)) == run1[expert]  # run 1's LoRA bytes intact
        assert digest(layout.lora(expert)) != run1[expert]  # run 2's differ
    assert (kept.state_dir("high")).is_dir() and kept.run_record.is_file()

    rows = run_rows(load_project(project_dir))
    assert [(r.number, r.status) for r in rows] == [(1, "finished"), (2, "finished")]
    assert rows[1].differences == [
        "[optimizer] learning_rate 0.0003 -> 0.001",
        "1 caption changed (demo_00.txt)",
    ]
    assert rows[1].experts["low"]["steps"] == 2 and rows[1].experts["low"]["final_loss"] > 0
    text = "\n".join(run_lines(rows))
    assert "run 2" in text and "changes from the run before:" in text

    r = run_cli("runs", str(project_dir), "--json")
    assert r.returncode == 0, r.stderr
    assert '"differences"' in r.stdout and '"number": 2' in r.stdout


def test_an_edit_to_one_expert_retrains_that_expert_only(project_dir):
    layout = OutputLayout.of(load_project(project_dir))
    high = digest(layout.lora("high"))
    low = digest(layout.lora("low"))
    edit_toml(project_dir, experts__low={"max_timestep": 300})
    plan, results = train(project_dir)
    assert (plan.action, plan.train, plan.carried) == ("new", ["low"], ["high"])
    assert "  high: carried over from run 1 unchanged (no edit touches it)" in plan.lines(
        load_project(project_dir)
    )
    assert [(r.expert, r.skipped) for r in results] == [("high", True), ("low", False)]
    assert digest(layout.lora("high")) == high  # carried, byte-identical
    assert digest(layout.lora("low")) != low
    assert digest(layout.kept_run(1).lora("low")) == low
    (row,) = run_rows(load_project(project_dir))[1:]
    assert row.experts["high"]["from_run"] == 1


def test_an_interrupted_run_with_edits_stops_with_exit_2(project_dir, monkeypatch):
    monkeypatch.setenv(faults.ENV, "step:2:sigint")
    faults.reset()
    with pytest.raises(Interrupted):
        train(project_dir, new_run=True)  # run 2, stopped at high's second step
    monkeypatch.delenv(faults.ENV)
    faults.reset()
    edit_toml(project_dir, optimizer={"learning_rate": 1e-3})
    before = files(project_dir / "output")
    with pytest.raises(PlanRefused) as refused:
        train(project_dir)
    assert refused.value.exit_code == 2
    assert str(refused.value) == (
        "run 2 was interrupted, and these edits change what it trains -- undo them to resume "
        f"run 2, or start run 3 with `wanlora train {project_dir} --new-run` (run 2 is kept)"
    )
    assert files(project_dir / "output") == before

    r = run_cli("train", str(project_dir), "--device", "cpu")
    assert r.returncode == 2, r.stderr
    assert "changed since run 2 (interrupted):" in r.stdout
    assert "  [optimizer] learning_rate 0.0003 -> 0.001" in r.stdout
    assert "--new-run" in r.stderr


def test_edits_that_change_no_trained_number_train_nothing(project_dir):
    before = files(project_dir / "output")
    edit_toml(
        project_dir,
        sample={"prompts": ["a red square"]},
        training={"save_state_every_n_steps": 5},
    )
    plan, results = train(project_dir)
    lines = plan.lines(load_project(project_dir))
    assert plan.action == "nothing" and all(r.skipped for r in results)
    assert lines[1:3] == [
        "  [training] save_state_every_n_steps 1 -> 5  (retrains nothing)",
        "  [sample] prompts [] -> ['a red square']  (retrains nothing)",
    ] or lines[1:3] == [
        "  [sample] prompts [] -> ['a red square']  (retrains nothing)",
        "  [training] save_state_every_n_steps 1 -> 5  (retrains nothing)",
    ]
    assert f"`wanlora sample {project_dir}` renders samples with them" in lines[3]
    assert files(project_dir / "output") == before


def test_nothing_changed_says_so_and_points_at_the_loras(project_dir):
    layout = OutputLayout.of(load_project(project_dir))
    plan, results = train(project_dir)
    assert plan.lines(load_project(project_dir)) == [
        "nothing changed since run 1",
        "high and low: already trained (run 1):",
        f"  {layout.lora('high')}",
        f"  {layout.lora('low')}",
    ] + ([f"report: {layout.report}"] if layout.report.exists() else [])
    assert [r.skipped for r in results] == [True, True]


def test_dry_run_prints_the_plan_and_changes_nothing(project_dir):
    edit_toml(project_dir, optimizer={"learning_rate": 1e-3})
    before = files(project_dir)
    r = run_cli("train", str(project_dir), "--dry-run", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert "--overwrite is deprecated: it means --new-run now" in r.stderr
    assert "--new-run: starting run 2; run 1 is kept in" in r.stdout
    assert "dry run: nothing was changed" in r.stdout
    r = run_cli("train", str(project_dir), "--dry-run", "--restart")
    assert "--restart is deprecated: it means --new-run now" in r.stderr
    r = run_cli("train", str(project_dir), "--dry-run")
    assert "[optimizer] learning_rate 0.0003 -> 0.001: starting run 2" in r.stdout
    assert files(project_dir) == before


def test_outputs_from_before_run_records_are_adopted_as_run_1(project_dir):
    project = load_project(project_dir)
    layout = OutputLayout.of(project)
    layout.run_record.unlink()  # as an earlier wanlora left it
    plan = make_plan(project)
    assert plan.action == "nothing" and plan.previous.adopted and plan.done == ["high", "low"]
    edit_toml(project_dir, optimizer={"learning_rate": 1e-3})
    plan = make_plan(load_project(project_dir))
    assert plan.action == "new" and plan.run == 2
    assert plan.changes[0].text.startswith("the high expert's training settings")
