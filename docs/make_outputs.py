"""Write every shown output and figure of the docs from the tool itself.

    python3 docs/make_outputs.py          # everything (runs `wanlora demo`: minutes on a CPU)
    python3 docs/make_outputs.py --fast   # everything but the demo's training output

The docs mark what is generated (wanlora/tutorial/markers.py): a command's output block,
a table made from commands, a figure in running text. This script runs each marked
command through the real CLI in a scratch folder (a fresh interpreter, stdout and stderr
into one pipe, as `cmd > log 2>&1` sees them), after the tutorial's own `wanlora init`
line, with paths made relative to that folder; figures come from
`wanlora.tutorial.figures.tutorial_figures()`. Only the text between markers is rewritten.
tests/test_docs_outputs.py regenerates (fast) and fails with a diff when a doc is stale;
tests/test_demo.py compares the demo's block with a real demo run.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from wanlora.fsutil import atomic_write_text
from wanlora.tutorial.figures import tutorial_figures
from wanlora.tutorial.markers import Marked, marked, relative_paths, rewrite  # noqa: F401 (tests)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "tutorial.md", ROOT / "README.md"]
# section 4 of the tutorial: the project the `cat mylora/...` blocks show
SETUP = [
    "wanlora init mylora --recipe wan22-t2v --name MyStyle_v1 --author me "
    '--trigger "cartoon screencap in rm artstyle"'
]
SLOW = ("wanlora demo",)  # trains: left as written by --fast (test_demo.py compares it)
# what differs between two runs of the demo, or with its --epochs: timings, losses, steps
VOLATILE = [
    (re.compile(r"\d+\.\d+ s/step"), "N s/step"),
    (re.compile(r"loss \d+\.\d+"), "loss N"),
    (re.compile(r"lr \d\.\d+e[-+]\d+"), "lr N"),
    (re.compile(r"\b\d+/\d+( loss)"), r"N/N\1"),
    (re.compile(r"\d+:\d\d:\d\d"), "T"),
    (re.compile(r"━+"), "━"),
    (re.compile(r"\b\d+ steps\b"), "N steps"),
    (re.compile(r" {2,}"), " "),  # rich pads the bar's columns to the widest value
]


def comparable(output: str) -> str:
    """An output with what varies from run to run masked (for comparing two demo runs)."""
    for pattern, replacement in VOLATILE:
        output = pattern.sub(replacement, output)
    return "\n".join(line.rstrip() for line in output.strip().splitlines())


class Runner:
    """Runs the docs' commands in one scratch folder; each command once."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {**os.environ, "WANLORA_MODELS_DIR": str(folder / "models")}
        self.env.pop("COLUMNS", None)
        self.done: dict[str, str] = {}
        for command in SETUP:
            self.run(command)

    def run(self, command: str) -> str:
        if command in self.done:
            return self.done[command]
        command_part, _, grep = command.partition(" | grep ")
        if grep:
            pattern = shlex.split(grep)[0]
            lines = self.run(command_part).splitlines()
            out = "\n".join(line for line in lines if pattern in line)
        else:
            args = shlex.split(command)
            if args[0] == "cat":
                out = (self.folder / args[1]).read_text(encoding="utf-8").rstrip("\n")
            elif args[0] == "wanlora":
                out = self._wanlora(args[1:], command)
            else:
                raise ValueError(f"cannot run {command!r}: only wanlora, cat and | grep")
        self.done[command] = out
        return out

    def _wanlora(self, args: list[str], command: str) -> str:
        r = subprocess.run(
            [sys.executable, "-c", "from wanlora.cli import main; main()", *args],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=1800,
        )
        out = relative_paths(r.stdout, str(self.folder.resolve()))
        if r.returncode != 0:
            raise RuntimeError(f"`{command}` exited {r.returncode}:\n{out}")
        return "\n".join(line.rstrip() for line in out.rstrip("\n").splitlines())


def timestep_quantiles(runner: Runner) -> str:
    """Section 1's table: the quantiles `wanlora inspect timesteps` prints, per expert."""
    rows = {"0.05": "5%", "0.5": "50% (median)", "0.95": "95%", "mean": "mean"}
    columns = []
    for expert in ("high", "low"):
        out = runner.run(f"wanlora inspect timesteps --recipe wan22-t2v --expert {expert}")
        values = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in rows:
                values[parts[0]] = parts[1]
        columns.append(values)
    lines = ["| quantile | high-noise t | low-noise t |", "|---|---|---|"]
    lines += [f"| {label} | {columns[0][q]} | {columns[1][q]} |" for q, label in rows.items()]
    return "\n".join(lines)


TABLES = {"timestep-quantiles": timestep_quantiles}


def regenerate(text: str, runner: Runner, *, slow: bool = True) -> str:
    """The doc with every generated part filled in from the tool."""
    figures = tutorial_figures()

    def fill(part: Marked) -> str:
        if part.kind == "fig":
            if part.key not in figures:
                raise KeyError(f"no figure {part.key!r} (wanlora/tutorial/figures.py)")
            return figures[part.key]
        if part.kind == "table":
            return TABLES[part.key](runner)
        if not slow and part.key.startswith(SLOW):
            return part.body
        return runner.run(part.key)

    return rewrite(text, fill)


def diff(old: str, new: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), name, f"{name} (tool)"
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="leave the demo's output as it is")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runner = Runner(Path(scratch))
        for doc in DOCS:
            old = doc.read_text(encoding="utf-8")
            new = regenerate(old, runner, slow=not args.fast)
            if new != old:
                atomic_write_text(doc, new)
                print(f"updated {doc.relative_to(ROOT)}")
            else:
                print(f"{doc.relative_to(ROOT)} is up to date")


if __name__ == "__main__":
    main()
