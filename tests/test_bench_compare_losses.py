"""benchmarks/compare_losses.py on a real bench_step output: tiny fast and exact variants on
the CPU, their per-step losses compared (max/mean relative, and of the mean loss)."""

from __future__ import annotations

import json

import pytest

from benchmarks_module import load_benchmark


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("losses")
    step = load_benchmark("bench_step.py")
    args = ["--tiny", "--device", "cpu", "--all", "--inline", "--warmup", "1", "--steps", "3"]
    assert step.main([*args, "--variants", "exact-eager,fast-eager", "--out", str(out)]) == 0
    return out / "results.json"


def test_fast_against_exact_within_and_beyond_a_tolerance(results, capsys):
    compare = load_benchmark("compare_losses.py")
    pair = ["--a", "exact-eager", "--b", "fast-eager"]
    assert compare.main([str(results), *pair, "--tolerance", "0.05"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("loss fast-eager vs exact-eager: max rel diff ")
    assert "over 4 steps" in lines[0]  # the warm-up step counts: it trains too
    assert lines[1].startswith("fast-eager: mean loss within 0.05 relative of exact-eager")
    report = json.loads(lines[2])
    losses = {r["variant"]: r["losses"] for r in json.loads(results.read_text())["results"]}
    a, b = losses["exact-eager"], losses["fast-eager"]
    assert report["mean_loss_rel_diff"] == pytest.approx(abs(sum(b) - sum(a)) / abs(sum(a)))
    assert report["max_rel_diff"] == pytest.approx(
        max(abs(y - x) / abs(x) for x, y in zip(a, b, strict=True))
    )
    assert 0 < report["mean_loss_rel_diff"] <= report["max_rel_diff"]  # fp8 products differ
    assert compare.main([str(results), *pair, "--tolerance", "1e-12"]) == 1
    assert "NOT within" in capsys.readouterr().out
    assert compare.main([str(results), *pair, "--skip", "3"]) in (0, 1)
    assert '"steps": 1' in capsys.readouterr().out
    # bench_step's own table prints the same line for its pairs
    renamed = [{"variant": "exact", "losses": a}, {"variant": "fast", "losses": b}]
    line = load_benchmark("bench_step.py").loss_diffs(renamed)
    assert line == lines[0].replace("fast-eager vs exact-eager", "fast vs exact")


def test_a_missing_variant_is_named(results, capsys):
    compare = load_benchmark("compare_losses.py")
    assert compare.main([str(results)]) == 2  # the defaults, exact and fast, did not run
    assert "exact: not in this output (it has: exact-eager, fast-eager)" in capsys.readouterr().err


def test_variants_from_two_outputs(results, tmp_path, capsys):
    """Two bench_step runs (one variant each, say under a per-command time limit) compare
    as one."""
    compare = load_benchmark("compare_losses.py")
    data = json.loads(results.read_text())
    files = []
    for r in data["results"]:
        files.append(tmp_path / f"{r['variant']}.json")
        files[-1].write_text(json.dumps({**data, "results": [r]}))
    pair = ["--a", "exact-eager", "--b", "fast-eager", "--tolerance", "0.05"]
    assert compare.main([str(f) for f in files] + pair) == 0
    together = capsys.readouterr().out
    assert compare.main([str(results), *pair]) == 0
    assert capsys.readouterr().out == together
