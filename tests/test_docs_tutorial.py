"""docs/tutorial.md stays true: its commands parse, the CPU-runnable ones run, links resolve.

- Every `wanlora ...` invocation in the tutorial's fenced shell blocks (bash/sh/shell/console)
  is parsed with the real CLI (`typer.main.get_command(app)`, then `make_context` with
  `resilient_parsing=False`, recursing into subcommands; nothing is executed), so an unknown
  option, a missing argument or a bad value fails here. (typer vendors its own click, so the
  command and exception types are recognised by their methods, not by click's classes.)
- The invocations that can run on a CPU without downloads are run, in document order, in a
  scratch folder: `init`, `inspect recipe|timesteps|schedule` and every command aimed at the
  demo project `wanlora-demo` (created by the tutorial's own `wanlora demo` line). They run
  in-process (typer's CliRunner) to keep the whole test under a minute. One deviation:
  `wanlora demo` makes its folder with the same library function but skips the training,
  which tests/test_demo.py runs through the real CLI.
- The appendix's run.sh and dataset.toml are exactly what `wanlora export musubi` writes for
  the tutorial's project (regenerate them with the commands in `_export_for_docs`).
- Relative links and images in the tutorial, docs/README.md, docs/architecture.md and
  README.md point at files
  (and headings) that exist.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from wanlora.cli import app
from wanlora.demo import create_demo_project
from wanlora.demo_i2v import create_i2v_demo_project

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIAL = DOCS / "tutorial.md"
SHELL_LANGS = {"bash", "sh", "shell", "console"}
DEMO_DIR = "wanlora-demo"
DEMO_DIRS = {DEMO_DIR, "wanlora-demo-i2v"}  # the demos the tutorial makes (`--recipe`)
OPERATORS = {"&&", "||", ";", "|", "&"}
# docs the index links that another part of the project writes (a warning until they exist)
WRITTEN_ELSEWHERE = {"reliability.md"}

# (subcommand path) -> runs on CPU with no downloads when aimed at the demo or at no project
RUNNABLE = {
    ("demo",),
    ("init",),
    ("check",),
    ("inspect", "recipe"),
    ("inspect", "config"),
    ("inspect", "timesteps"),
    ("inspect", "schedule"),
    ("export", "musubi"),
    ("caption",),  # only --review and --show-prompt
}
NEEDS_NO_PROJECT = {
    ("init",),
    ("inspect", "recipe"),
    ("inspect", "timesteps"),
    ("inspect", "schedule"),
}


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number of the opening fence) of every fenced code block."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3).lower(), i + 1
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((lang, "\n".join(body), start))
        i += 1
    return blocks


def wanlora_invocations(text: str) -> list[tuple[list[str], str]]:
    """The argument lists of every `wanlora` command in the shell blocks, with the source line."""
    found = []
    for lang, body, start in fenced_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        joined = re.sub(r"\\\n", " ", body)  # line continuations
        for offset, line in enumerate(joined.splitlines()):
            line = re.sub(r"^\s*\$\s+", "", line)  # a copied prompt
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            tokens = list(lexer)
            command: list[str] = []
            for token in [*tokens, ";"]:
                if token in OPERATORS:
                    while command and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", command[0]):
                        command = command[1:]  # VAR=value prefixes
                    if command and command[0] == "wanlora":
                        found.append(
                            (command[1:], f"tutorial.md:{start + offset + 1}: {line.strip()}")
                        )
                    command = []
                else:
                    command.append(token)
    return found


class ParseError(Exception):
    pass


def _is_group(command) -> bool:
    return hasattr(command, "resolve_command") and hasattr(command, "commands")


def parse(args: list[str]) -> tuple[str, ...]:
    """Parse like the real CLI without running anything; return the subcommand path.

    Raises ParseError with the CLI's own message when the arguments are rejected."""
    command = typer.main.get_command(app)
    path: list[str] = []
    name = "wanlora"
    try:
        while True:
            ctx = command.make_context(name, list(args), resilient_parsing=False)
            if not _is_group(command):
                return tuple(path)
            rest = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", []))
            rest += ctx.args
            if not rest:
                raise ParseError(f"`wanlora {' '.join(path)}` needs a subcommand")
            sub_name, sub, args = command.resolve_command(ctx, rest)
            if sub is None:
                raise ParseError(f"no such command {rest[0]!r}")
            command, name = sub, sub_name
            path.append(sub_name)
    except ParseError:
        raise
    except Exception as exc:  # click's UsageError, BadParameter, NoArgsIsHelpError, Exit
        message = getattr(exc, "format_message", None)
        raise ParseError(message() if message else repr(exc)) from exc


def positional_targets(args: list[str], path: tuple[str, ...]) -> list[str]:
    """Arguments that are not options or option values (for deciding what a command touches)."""
    command = typer.main.get_command(app)
    for part in path:
        command = command.commands[part]  # type: ignore[attr-defined]
    ctx = command.make_context("x", list(args[len(path) :]), resilient_parsing=False)
    values = []
    for param in command.params:
        if param.param_type_name == "argument" and ctx.params.get(param.name) is not None:
            values.append(str(ctx.params[param.name]))
    for param in command.params:
        if param.name == "project" and ctx.params.get("project") is not None:
            values.append(str(ctx.params["project"]))
    return values


@pytest.fixture(scope="module")
def invocations() -> list[tuple[list[str], str]]:
    found = wanlora_invocations(TUTORIAL.read_text(encoding="utf-8"))
    assert len(found) >= 30, "the tutorial should show the tool's commands"
    return found


def test_every_wanlora_command_parses(invocations):
    problems = []
    for args, where in invocations:
        try:
            parse(args)
        except ParseError as exc:
            problems.append(f"{where}\n    -> {exc}")
    assert not problems, "commands in the tutorial that the CLI rejects:\n" + "\n".join(problems)


def test_tutorial_covers_every_command(invocations):
    used = {parse(args) for args, _ in invocations}
    top = typer.main.get_command(app)
    missing = []
    for name, command in top.commands.items():  # type: ignore[attr-defined]
        if _is_group(command):
            missing += [(name, sub) for sub in command.commands if (name, sub) not in used]
        elif (name,) not in used:
            missing.append((name,))
    assert not missing, f"commands the tutorial never shows: {missing}"


def test_runnable_commands_run(invocations, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    ran = []
    for args, where in invocations:
        path = parse(args)
        if path not in RUNNABLE:
            continue
        targets = positional_targets(args, path)
        if path == ("caption",) and not {"--review", "--show-prompt"} & set(args):
            continue  # would call a captioning model
        if path == ("demo",):
            # training is covered by tests/test_demo.py; here the demo folder is made by the
            # same library function without the training part
            recipe = args[args.index("--recipe") + 1] if "--recipe" in args else "wan22-t2v"
            make = create_i2v_demo_project if recipe == "wan22-i2v" else create_demo_project
            make(tmp_path / targets[0], epochs=1)
            ran.append(path)
            continue
        elif path not in NEEDS_NO_PROJECT and not any(
            Path(t).parts[0] in DEMO_DIRS for t in targets if Path(t).parts
        ):
            continue  # a command on the reader's own project (mylora): parsed only
        elif path == ("init",) and Path(targets[0]).exists():
            continue
        result = runner.invoke(app, args)
        failed = result.exit_code != 0 or (
            result.exception is not None and not isinstance(result.exception, SystemExit)
        )
        assert not failed, (
            f"{where}\n    exit {result.exit_code}: {result.exception!r}\n{result.output[-3000:]}"
        )
        ran.append(path)
    assert ("demo",) in ran, "the tutorial's `wanlora demo wanlora-demo` did not run"
    for needed in [
        ("check",),
        ("export", "musubi"),
        ("inspect", "timesteps"),
        ("inspect", "schedule"),
    ]:
        assert needed in ran, f"no runnable `wanlora {' '.join(needed)}` in the tutorial"
    assert (tmp_path / DEMO_DIR / "export" / "musubi" / "run.sh").is_file()


def _export_for_docs(tmp_path: Path, monkeypatch) -> tuple[str, str]:
    """What the appendix shows: `wanlora init` + `wanlora export musubi` for the tutorial's
    project in /workspace with WANLORA_MODELS_DIR=/workspace/models (built in tmp_path, then
    the paths are written as /workspace). By hand:
        cd /workspace && WANLORA_MODELS_DIR=/workspace/models wanlora init mylora \\
          --recipe wan22-t2v --name MyStyle_v1 --author me \\
          --trigger "cartoon screencap in rm artstyle" && wanlora export musubi mylora
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANLORA_MODELS_DIR", str(tmp_path / "models"))
    runner = CliRunner()
    init = runner.invoke(
        app,
        [
            "init",
            "mylora",
            "--recipe",
            "wan22-t2v",
            "--name",
            "MyStyle_v1",
            "--author",
            "me",
            "--trigger",
            "cartoon screencap in rm artstyle",
        ],
    )
    assert init.exit_code == 0, init.output
    export = runner.invoke(app, ["export", "musubi", "mylora"])
    assert export.exit_code == 0, export.output
    folder = tmp_path / "mylora" / "export" / "musubi"
    real = str(tmp_path.resolve())
    texts = []
    for name in ("run.sh", "dataset.toml"):
        text = (folder / name).read_text(encoding="utf-8")
        texts.append(text.replace(real, "/workspace").replace(str(tmp_path), "/workspace").strip())
    return texts[0], texts[1]


def _block_after(marker: str) -> str:
    text = TUTORIAL.read_text(encoding="utf-8")
    head, sep, tail = text.partition(f"<!-- {marker} -->")
    assert sep, f"marker <!-- {marker} --> missing from the tutorial"
    match = re.match(r"\s*```[\w-]*\n(.*?)\n```", tail, re.DOTALL)
    assert match, f"no fenced block after <!-- {marker} -->"
    return match.group(1).strip()


def test_appendix_is_the_real_export(tmp_path, monkeypatch):
    run_sh, dataset_toml = _export_for_docs(tmp_path, monkeypatch)
    assert _block_after("musubi-run.sh") == run_sh, (
        "docs/tutorial.md's appendix run.sh differs from `wanlora export musubi`: paste the new "
        "output (see _export_for_docs in this test)"
    )
    assert _block_after("musubi-dataset.toml") == dataset_toml


@pytest.mark.parametrize(
    "doc",
    [TUTORIAL, DOCS / "README.md", ROOT / "README.md", DOCS / "architecture.md"],
    ids=["tutorial", "docs-index", "readme", "architecture"],
)
def test_relative_links_resolve(doc):
    text = doc.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # not inside code blocks
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://|^mailto:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        missing_anchor = anchor and path.suffix == ".md" and anchor not in _anchors(path)
        if not path.exists() and target in WRITTEN_ELSEWHERE:
            warnings.warn(f"{doc.name} links {target}, not written yet", stacklevel=1)
        elif not path.exists() or missing_anchor:
            broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    for line in text.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors
