"""The generated parts of a doc, and rewriting only those (docs/make_outputs.py fills them).

Three kinds of marker; everything outside them is never touched:

- a command's shown output: the fenced block between
  `<!-- output: wanlora check wanlora-demo -->` and `<!-- /output -->` holds what the command
  prints (stdout and stderr as a terminal interleaves them, paths relative to the folder it
  ran in). `... | grep TEXT` keeps the lines containing TEXT; `cat FILE` shows a file the
  commands before it wrote.
- a table made from commands: `<!-- table: NAME -->` ... `<!-- /table -->`.
- a figure in running text: `<!--fig:NAME-->value<!--/fig-->` (tutorial/figures.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

OUTPUT = re.compile(
    r"(?P<open><!-- output: (?P<command>.+?) -->\n)(?P<fence>```[\w-]*\n)(?P<body>.*?)"
    r"(?P<close>\n```\n<!-- /output -->)",
    re.DOTALL,
)
TABLE = re.compile(
    r"(?P<open><!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close>\n<!-- /table -->)",
    re.DOTALL,
)
FIGURE = re.compile(r"(?P<open><!--fig:(?P<name>\w+)-->)(?P<body>.*?)(?P<close><!--/fig-->)")
# an opening marker without its closing one (a broken edit): refused, never guessed at
LOOSE = re.compile(r"<!-- (output|table): .+? -->|<!--fig:\w+-->")


class MarkerError(ValueError):
    pass


@dataclass(frozen=True)
class Marked:
    kind: str  # "output" | "table" | "fig"
    key: str  # the command, the table's name or the figure's name
    body: str


def marked(text: str) -> list[Marked]:
    """Every generated part of a doc, in order (raises MarkerError on a marker left open)."""
    found = [Marked("output", m["command"], m["body"]) for m in OUTPUT.finditer(text)]
    found += [Marked("table", m["name"], m["body"]) for m in TABLE.finditer(text)]
    found += [Marked("fig", m["name"], m["body"]) for m in FIGURE.finditer(text)]
    closed = len(found)
    opened = len(LOOSE.findall(text))
    if opened != closed:
        raise MarkerError(
            f"{opened - closed} marker(s) without their closing marker (or without a fenced "
            "block right after an output marker)"
        )
    return found


def rewrite(text: str, fill: Callable[[Marked], str]) -> str:
    """`text` with each generated part replaced by `fill(part)`; nothing else changes."""
    marked(text)  # refuse an unbalanced doc before writing anything

    def sub(kind: str, key: str):
        def replace(m: re.Match) -> str:
            new = fill(Marked(kind, m[key], m["body"]))
            return m["open"] + (m["fence"] if kind == "output" else "") + new + m["close"]

        return replace

    text = OUTPUT.sub(sub("output", "command"), text)
    text = TABLE.sub(sub("table", "name"), text)
    return FIGURE.sub(sub("fig", "name"), text)


def relative_paths(output: str, folder: str) -> str:
    """Paths under the folder a command ran in, as the reader who ran it there sees them."""
    return output.replace(folder.rstrip("/") + "/", "").replace(folder.rstrip("/"), ".")
