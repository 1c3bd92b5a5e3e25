"""A command pointed at a folder inside a project (`wanlora check mylora/dataset`) fails with
one line naming the project folder and the command to run instead."""

from __future__ import annotations

import pytest

from cli_run import run_cli
from wanlora.captioning import review_pairs
from wanlora.dataset.lint import project_for_check
from wanlora.project_init import init_project
from wanlora.recipes import NotAProjectFolder, enclosing_project, load_project


@pytest.fixture
def mylora(tmp_path):
    return init_project(tmp_path / "mylora", "wan22-t2v", "N", "A").root


def test_every_command_names_the_project_and_the_right_command(tmp_path, mylora):
    r = run_cli("check", "mylora/dataset", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert f"{mylora / 'dataset'} is the dataset folder of the project {mylora}" in r.stderr
    assert "run `wanlora check mylora`" in r.stderr

    r = run_cli("train", "mylora/dataset", "--overwrite", cwd=tmp_path)
    assert r.returncode == 1 and "run `wanlora train mylora --overwrite`" in r.stderr

    inside = mylora / "dataset" / "more"  # no folder argument: "." inside the dataset
    inside.mkdir()
    r = run_cli("caption", "--show-prompt", cwd=inside)
    assert r.returncode == 1 and "inside the dataset folder of the project" in r.stderr
    assert "run `wanlora caption --show-prompt ../..`" in r.stderr


def test_library_entry_points_refuse_the_dataset_folder(tmp_path, mylora):
    dataset = mylora / "dataset"
    for load in (load_project, review_pairs):  # check: in the CLI (test above)
        with pytest.raises(NotAProjectFolder) as info:
            load(dataset)
        assert info.value.project == mylora and info.value.in_dataset
    # any other folder inside a project is no project either (load_project), but check may
    # still lint it as a plain folder of images
    (mylora / "extra").mkdir()
    with pytest.raises(NotAProjectFolder, match="is inside the project"):
        load_project(mylora / "extra")
    assert project_for_check(mylora / "extra").dataset_dir == (mylora / "extra").resolve()


def test_folders_outside_any_project_keep_todays_behaviour(tmp_path, mylora):
    pics = tmp_path / "pics"
    pics.mkdir()
    assert enclosing_project(pics) is None and enclosing_project(mylora) is None
    assert project_for_check(pics).dataset_dir == pics.resolve()
    with pytest.raises(Exception, match="no project file here"):
        load_project(pics)
    # a broken wanlora.toml above: its own error, when that project is loaded, says what
    (mylora / "wanlora.toml").write_text("recipe = 3\n")
    assert enclosing_project(mylora / "dataset") is None
