"""The tutorial's demo outputs against real demo runs (tests/test_demo.py, test_i2v_sample.py,
test_demo_ti2v.py): docs/make_outputs.py writes those blocks, these runs check them."""

from __future__ import annotations

import re

from make_outputs_module import load_make_outputs

T2V_DEMO = "wanlora demo wanlora-demo"
I2V_DEMO = "wanlora demo wanlora-demo-i2v --recipe wan22-i2v"
TI2V_DEMO = "wanlora demo wanlora-demo-5b --recipe wan22-ti2v-5b"
# the verdict's words follow the run's length (weak after 1 epoch, clear after 3): its line is
# checked for its shape only
VERDICT = re.compile(
    r"^(high|low|main): (\w+-noise|main|the) LoRA changes the prediction by [\d.]+% \(\w+\)"
)


def assert_the_tutorial_shows_this_run(r, folder, command: str = T2V_DEMO) -> None:
    """docs/tutorial.md's output block of `command` is this run's (made in `folder`), but for
    timings, losses and step counts (this run may have fewer epochs than the tutorial's):
    the log lines (stderr) and the rest (stdout) each in the same order."""
    make_outputs = load_make_outputs()
    text = make_outputs.DOCS[0].read_text(encoding="utf-8")
    (shown,) = [p.body for p in make_outputs.marked(text) if p.key == command]
    where = str(folder.resolve())
    stdout = make_outputs.relative_paths(r.stdout, where)
    stderr = make_outputs.relative_paths(r.stderr, where)
    logged = ("INFO ", "WARNING ")
    lines = shown.splitlines()
    want_log = [line for line in lines if line.startswith(logged)]
    want_out = [line for line in lines if not line.startswith(logged)]
    fix = "regenerate it with `python3 docs/make_outputs.py`"

    def same_shape(text: str) -> str:
        return "\n".join(
            VERDICT.match(line).group(0).split(" by ")[0] if VERDICT.match(line) else line
            for line in text.splitlines()
        )

    got_out = make_outputs.comparable(same_shape(stdout))
    assert make_outputs.comparable(same_shape("\n".join(want_out))) == got_out, (
        f"docs/tutorial.md's `{command}` output is stale; {fix}:\n{stdout}"
    )
    assert make_outputs.comparable("\n".join(want_log)) == make_outputs.comparable(stderr), (
        f"docs/tutorial.md's `{command}` log lines are stale; {fix}:\n{stderr}"
    )
