"""What the CLI prints, as a user's shell or a script sees it (a real subprocess, stdout a pipe).

Messages and help name TOML tables (`[sample]`, `[project]`): they must print intact. Flags
read as flags. Piped output is never wrapped, so a path or a command stays on one line.
"""

from __future__ import annotations

from cli_run import run_cli
from wanlora.project_init import init_project


def test_help_keeps_bracketed_table_names_and_shows_flags_as_flags():
    r = run_cli("sample", "--help")
    assert r.returncode == 0, r.stderr
    assert "[sample]" in " ".join(r.stdout.split())  # "default: [sample] prompts"
    r = run_cli("train", "--help")
    assert r.returncode == 0, r.stderr
    assert "<bool>" not in r.stdout
    assert "--overwrite" in r.stdout and "--parallel-experts / --sequential" in r.stdout
    assert "training.max_vram_gb" in r.stdout  # help text is not cut off with an ellipsis
    assert "Usage: wanlora train" in r.stdout


def test_an_error_message_keeps_its_table_name(tmp_path):
    init_project(tmp_path / "p", "wan22-t2v", "N", "A")  # no trigger: captions have no phrase
    r = run_cli("caption", str(tmp_path / "p"), "--show-prompt")
    assert r.returncode == 1
    assert 'set trigger = "..." under [project] in wanlora.toml' in r.stderr
    assert r.stderr.count("\n") == 1  # one line


def test_a_fix_naming_two_tables_prints_intact(tmp_path):
    init_project(tmp_path / "p", "wan22-t2v", "N", "A")
    with open(tmp_path / "p" / "wanlora.toml", "a") as f:  # lr_end above the lr
        f.write("\n[scheduler]\nlr_end = 1.0\n")
    r = run_cli("inspect", "schedule", "--project", str(tmp_path / "p"))
    assert r.returncode == 1
    assert "lower [scheduler] lr_end or raise [optimizer] learning_rate" in r.stderr


def test_piped_output_never_splits_a_long_path(tmp_path):
    root = tmp_path / ("a_long_folder_name_" * 6) / ("and_another_one_" * 6) / "mylora"
    r = run_cli("init", str(root), "--name", "N", "--author", "A")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"Created project {root}" in lines
    assert any(line.strip().startswith(f"3. wanlora check {root}") for line in lines)
    assert max(len(line) for line in lines) > 200  # one line each, not wrapped at 80
    r = run_cli("check", str(root / "no such folder"))
    assert r.returncode == 1
    assert str(root / "no such folder") in r.stderr and r.stderr.count("\n") == 1


def test_a_flag_given_true_or_false_says_it_is_a_flag(tmp_path):
    r = run_cli("train", "mylora", "--overwrite", "true", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "error: --overwrite is a flag and takes no value (got `--overwrite true`) -- "
        "write --overwrite alone"
    )
    r = run_cli("train", "mylora", "--parallel-experts", "false", cwd=tmp_path)
    assert "-- write --sequential" in r.stderr and r.returncode == 2
    r = run_cli("check", "--json", "no", cwd=tmp_path)
    assert "--json is a flag and takes no value" in r.stderr and "leave it out" in r.stderr
