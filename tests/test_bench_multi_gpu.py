"""bench_multi_gpu.py's full-size project, built at tiny size and trained on the CPU."""

from __future__ import annotations

from benchmarks_module import load_benchmark
from wanlora.dataset.lint import check_dataset
from wanlora.models.tiny import tiny_dit_layout
from wanlora.recipes import load_project
from wanlora.train.callbacks import StepReport


def test_full_size_project_builds_and_trains(tmp_path):
    bench = load_benchmark("bench_multi_gpu.py")
    layout = {name: list(shape) for name, shape in tiny_dit_layout().items()}
    root = bench.write_full_size_project(
        tmp_path / "bench", epochs=1, resolution=64, dit_layout=layout
    )
    project = load_project(root)
    assert project.config.experts["high"].dit == project.config.experts["low"].dit
    assert not check_dataset(project).errors
    dit = root / project.config.experts["high"].dit
    size = dit.stat().st_size
    bench.write_full_size_project(root, epochs=1, resolution=64, dit_layout=layout)
    assert dit.stat().st_size == size  # reused, not rewritten

    from wanlora.cache.build import build_cache

    build_cache(project)
    (row,) = bench.run_modes(root, ["sequential"], cpu=True, work=tmp_path / "work")
    assert row["steps"] == {"high": 18, "low": 18}  # 18 images, 1 epoch, batch 1
    assert set(row["warm_s_per_step"]) == {"high", "low"}
    assert all(s > 0 for s in row["warm_s_per_step"].values())


def test_warm_step_seconds_leaves_out_the_first_steps():
    bench = load_benchmark("bench_multi_gpu.py")
    reports = [StepReport("high", i + 1, 6, 0.1, 1e-4, s) for i, s in enumerate([9, 9, 9, 1, 2, 3])]
    assert bench.warm_step_seconds(reports) == {"high": 2}
    assert bench.warm_step_seconds(reports[:3]) == {"high": None}


def test_recipe_projection_extends_each_expert_to_1800_samples():
    bench = load_benchmark("bench_multi_gpu.py")
    steps, warm = {"high": 36, "low": 36}, {"high": 0.5, "low": 0.5}
    one_after_other = bench.projected_recipe_minutes(
        100.0, steps, warm, side_by_side=False, data_parallel=1
    )
    assert one_after_other == round((100 + 2 * 1764 * 0.5) / 60, 1)
    side_by_side = bench.projected_recipe_minutes(
        100.0, steps, warm, side_by_side=True, data_parallel=1
    )
    assert side_by_side == round((100 + 1764 * 0.5) / 60, 1)
    dp = bench.projected_recipe_minutes(
        100.0, {"high": 18, "low": 18}, warm, side_by_side=False, data_parallel=2
    )
    assert dp == round((100 + 2 * 882 * 0.5) / 60, 1)
    assert (
        bench.projected_recipe_minutes(
            1.0, steps, {"high": None, "low": 0.5}, side_by_side=True, data_parallel=1
        )
        is None
    )
