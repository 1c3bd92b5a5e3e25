"""The outputs and figures the docs show are the tool's: regenerated, they come out the same.

docs/make_outputs.py fills the marked parts of docs/tutorial.md and README.md from the real
CLI and from wanlora.tutorial.figures; here it runs again (`--fast`: the demo's training
output is compared by tests/test_demo.py, against the demo run it makes anyway) in a scratch
folder, and any difference fails with the diff and the command that regenerates the docs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from demo_output import I2V_DEMO, T2V_DEMO, TI2V_DEMO
from make_outputs_module import load_make_outputs
from wanlora.tutorial.figures import MEASURED, tutorial_figures
from wanlora.tutorial.markers import MarkerError, marked, rewrite

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python3 docs/make_outputs.py"


make_outputs = load_make_outputs()


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    return make_outputs.Runner(tmp_path_factory.mktemp("docs_outputs"))


@pytest.mark.parametrize("doc", make_outputs.DOCS, ids=lambda p: p.name)
def test_docs_show_what_the_tool_prints(doc, runner):
    old = doc.read_text(encoding="utf-8")
    new = make_outputs.regenerate(old, runner, slow=False)
    assert new == old, (
        f"{doc.relative_to(ROOT)} disagrees with the tool; regenerate it with `{REGENERATE}` "
        f"(or `{REGENERATE} --fast`, without the demo's training):\n"
        + make_outputs.diff(old, new, doc.name)
    )


def test_the_tutorial_marks_its_outputs_and_figures():
    parts = marked(make_outputs.DOCS[0].read_text(encoding="utf-8"))
    outputs = {p.key for p in parts if p.kind == "output"}
    assert {"wanlora demo wanlora-demo", "cat mylora/wanlora.toml"} <= outputs
    assert {p.key for p in parts if p.kind == "table"} == {"timestep-quantiles"}
    figures = {p.key for p in parts if p.kind == "fig"}
    for needed in ("doctor_need", "exact_min_all", "exact_cost", "steps_per_expert", "download"):
        assert needed in figures, needed
    unknown = figures - set(tutorial_figures())
    assert not unknown, f"figures the tool does not know: {unknown}"


def test_no_stale_figure_is_left_unmarked():
    """The figures the issue found stale, and the old minute counts, appear nowhere unmarked."""
    for doc in make_outputs.DOCS:
        text = re.sub(r"<!--fig:\w+-->.*?<!--/fig-->", "", doc.read_text(encoding="utf-8"))
        for stale in ("23.2 GB", "20.6 GB", "~31 minutes", "~15 minutes per expert"):
            assert stale not in text, f"{doc.name}: {stale!r}"


def test_measured_figures_are_the_benchmarks():
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    for name, m in MEASURED.items():
        assert m.results_text in results, f"{name}: {m.results_text} s/step not in RESULTS.md"
        assert f"{m.peak_gib:.1f}" in results, f"{name}: {m.peak_gib} GiB not in RESULTS.md"


def test_figures_follow_the_recipe_and_the_doctor():
    figures = tutorial_figures()
    assert figures["steps_per_expert"] == "1800" and figures["steps_all"] == "3600"
    assert figures["exact_min_all"] == f"~{2 * 1800 * 0.43 / 60:.0f}"
    assert figures["doctor_need"].startswith("~") and figures["doctor_need"].endswith(" GB")


def test_only_the_marked_parts_are_rewritten():
    text = (
        "intro 23.2 GB stays\n<!-- output: wanlora x -->\n```text\nold\n```\n<!-- /output -->\n"
        "middle | table |\n<!-- table: t -->\n| a |\n<!-- /table -->\n"
        "about <!--fig:f-->1<!--/fig--> min, ```not a block```\n"
    )
    new = rewrite(
        text, lambda part: {"output": "new\nlines", "table": "| b |", "fig": "2"}[part.kind]
    )
    assert new == (
        "intro 23.2 GB stays\n<!-- output: wanlora x -->\n```text\nnew\nlines\n```\n"
        "<!-- /output -->\nmiddle | table |\n<!-- table: t -->\n| b |\n<!-- /table -->\n"
        "about <!--fig:f-->2<!--/fig--> min, ```not a block```\n"
    )
    with pytest.raises(MarkerError, match="without their closing marker"):
        rewrite("<!-- output: wanlora x -->\n```text\nold\n```\n", lambda part: "")
    with pytest.raises(MarkerError):
        marked("a <!--fig:f-->1 and no end")


def test_output_paths_are_relative_and_volatile_numbers_masked():
    assert make_outputs.relative_paths("/tmp/x/wanlora-demo/out and /tmp/x", "/tmp/x") == (
        "wanlora-demo/out and ."
    )
    a = " high ━━━━ 54/54 loss 2.4780  lr 1.00e-07  0.04 s/step 0:00:00"
    b = " high ━━━━━━━━ 18/18 loss 2.4776  lr 1.00e-07  7.07 s/step 0:00:01"
    assert make_outputs.comparable(a) == make_outputs.comparable(b)
    assert make_outputs.comparable("18 images") != make_outputs.comparable("17 images")


def _section(text: str, heading: str) -> str:
    """The text under the heading containing `heading` (numbers may change), to the next one."""
    match = re.search(
        rf"^(#+) [^\n]*{re.escape(heading)}[^\n]*\n(.*?)(?=^#{{1,3}} )", text, re.M | re.S
    )
    assert match, f"the tutorial has no section {heading!r}"
    return match.group(2)


def test_the_tutorial_has_the_sections_a_new_user_asked_for():
    text = make_outputs.DOCS[0].read_text(encoding="utf-8")
    install = _section(text, "Install on your own computer")
    for needed in ("PyTorch first", "CPU", "CUDA", "nvidia-smi", "pip install -e ."):
        assert needed in install, needed
    assert not re.search(r"https?://|download\.pytorch\.org", install), (
        "the install section says where to choose the build, without naming a download host"
    )
    remote = _section(text, "On a rented machine")
    for needed in ("tmux new", "nohup wanlora train", "scp ", "rsync "):
        assert needed in remote, needed
    assert "ssh -L 6006:localhost:6006" in text  # TensorBoard over an ssh tunnel
    samples = _section(text, "[sample] every_n_epochs")
    assert "every_n_epochs = 10" in samples and "output/samples/" in samples


def test_every_demo_output_is_marked():
    """Each demo's run in the tutorial is generated (make_outputs) and checked against a real
    run of that demo (tests/demo_output.py)."""
    parts = marked(make_outputs.DOCS[0].read_text(encoding="utf-8"))
    outputs = {p.key for p in parts if p.kind == "output"}
    assert {T2V_DEMO, I2V_DEMO, TI2V_DEMO} <= outputs
