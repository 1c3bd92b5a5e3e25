"""`wanlora export musubi`: the recipe's musubi-tuner workflow, flag for flag (RECIPE.md)."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import pytest

from cli_run import run_cli
from wanlora.errors import WanloraError
from wanlora.export.musubi import musubi_export, write_musubi_export
from wanlora.models.registry import MODEL_FILES
from wanlora.project_init import init_project
from wanlora.recipes import load_project
from wanlora.recipes.project import tomllib

TRAIN_SCRIPT = "src/musubi_tuner/wan_train_network.py"

# RECIPE.md, "Training settings, Wan 2.2": every flag of the author's training command and its
# value (None: a switch). Paths and names are checked separately.
WAN22_TRAIN_FLAGS = {
    "--task": "t2v-A14B",
    "--xformers": None,
    "--mixed_precision": "fp16",
    "--fp8_base": None,
    "--optimizer_type": "adamw",
    "--learning_rate": "3e-4",
    "--optimizer_args": "weight_decay=0.1",
    "--max_grad_norm": "0",
    "--gradient_checkpointing": None,
    "--gradient_accumulation_steps": "1",
    "--network_module": "networks.lora_wan",
    "--network_dim": "16",
    "--network_alpha": "16",
    "--timestep_sampling": "shift",
    "--discrete_flow_shift": "1.0",
    "--max_train_epochs": "100",
    "--save_every_n_epochs": "100",
    "--seed": "5",
    "--lr_scheduler": "polynomial",
    "--lr_scheduler_power": "8",
    "--lr_scheduler_min_lr_ratio": "5e-5",
    "--max_data_loader_n_workers": "2",
    "--persistent_data_loader_workers": None,
    "--preserve_distribution_shape": None,
}
WAN22_RANGES = {"high": ("875", "1000"), "low": ("0", "875")}
PATH_AND_NAME_FLAGS = {
    "--dit",
    "--vae",
    "--t5",
    "--dataset_config",
    "--output_dir",
    "--output_name",
    "--metadata_title",
    "--metadata_author",
}

# RECIPE.md, "Training settings, Wan 2.1": the same, except these.
WAN21_TRAIN_FLAGS = {
    **{k: v for k, v in WAN22_TRAIN_FLAGS.items() if k != "--preserve_distribution_shape"},
    "--task": "t2v-14B",
    "--mixed_precision": "bf16",
    "--network_dim": "32",
    "--network_alpha": "32",
    "--lr_scheduler_power": "4",
}


def parse_flags(args: list[str]) -> dict[str, str | None]:
    """--flag value / --switch -> {flag: value or None}; a repeated flag is an error."""
    flags: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        assert flag.startswith("--"), f"stray value {flag!r}"
        assert flag not in flags, f"{flag} given twice"
        values = []
        while i + 1 < len(args) and not args[i + 1].startswith("--"):
            values.append(args[i + 1])
            i += 1
        flags[flag] = " ".join(values) if values else None
        i += 1
    return flags


def split_train_command(command: list[str]) -> tuple[dict, dict]:
    """accelerate's own flags, and the training script's flags."""
    assert command[:2] == ["accelerate", "launch"]
    script_at = command.index(TRAIN_SCRIPT)
    return parse_flags(command[2:script_at]), parse_flags(command[script_at + 1 :])


def script_commands(script: str) -> list[list[str]]:
    joined = script.replace("\\\n", " ")
    return [
        shlex.split(line)
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not line.startswith("set ")
    ]


def model_path(project, model_id: str) -> str:
    return str(MODEL_FILES[model_id].local_path(project.models_dir))


@pytest.fixture
def wan22(tmp_path):
    return init_project(tmp_path / "my lora", "wan22-t2v", "MyStyle_v1", "me")


def add_overrides(project, text: str):
    path = project.root / "wanlora.toml"
    path.write_text(path.read_text() + "\n" + text)
    return load_project(project.root)


def test_wan22_commands_match_the_recipe_flag_for_flag(wan22):
    export = musubi_export(wan22)
    assert len(export.commands) == 4
    folder = wan22.root / "export" / "musubi"
    dataset_config = str(folder / "dataset.toml")

    cache_latents, cache_text, *train = export.commands
    assert cache_latents[:2] == ["python", "src/musubi_tuner/wan_cache_latents.py"]
    assert parse_flags(cache_latents[2:]) == {
        "--dataset_config": dataset_config,
        "--vae": model_path(wan22, "wan21-vae"),
    }
    assert cache_text[:2] == ["python", "src/musubi_tuner/wan_cache_text_encoder_outputs.py"]
    assert parse_flags(cache_text[2:]) == {
        "--dataset_config": dataset_config,
        "--t5": model_path(wan22, "umt5-xxl-enc-bf16"),
        "--batch_size": "16",
    }

    for expert, command, label in zip(
        ("high", "low"), train, ("HighNoise", "LowNoise"), strict=True
    ):
        launcher, flags = split_train_command(command)
        assert launcher == {"--num_cpu_threads_per_process": "1", "--mixed_precision": "fp16"}
        lo, hi = WAN22_RANGES[expert]
        expected = {**WAN22_TRAIN_FLAGS, "--min_timestep": lo, "--max_timestep": hi}
        assert {k: v for k, v in flags.items() if k not in PATH_AND_NAME_FLAGS} == expected
        name = f"WAN2.2-{label}_MyStyle_v1_by-me"
        assert flags["--dit"] == model_path(wan22, f"wan22-t2v-{expert}-fp16")
        assert flags["--vae"] == model_path(wan22, "wan21-vae")
        assert flags["--t5"] == model_path(wan22, "umt5-xxl-enc-bf16")
        assert flags["--dataset_config"] == dataset_config
        assert flags["--output_dir"] == str(folder / "output")
        assert flags["--output_name"] == flags["--metadata_title"] == name
        assert flags["--metadata_author"] == "me"


def test_script_runs_exactly_the_commands(wan22):
    export = musubi_export(wan22)
    assert export.script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in export.script
    assert script_commands(export.script) == export.commands  # the space in "my lora" survives


def test_dataset_toml_has_the_recipe_format(wan22):
    data = tomllib.loads(musubi_export(wan22).dataset_toml)
    assert data["general"] == {
        "resolution": [960, 960],
        "caption_extension": ".txt",
        "batch_size": 1,
        "enable_bucket": True,
        "bucket_no_upscale": False,
    }
    assert data["datasets"] == [
        {
            "image_directory": str(wan22.root / "dataset"),
            "cache_directory": str(wan22.root / "export" / "musubi" / "cache"),
            "num_repeats": 1,
        }
    ]


def test_wan21_commands_match_the_recipe(tmp_path):
    project = init_project(tmp_path / "p", "wan21-t2v", "Old", "me")
    export = musubi_export(project)
    assert len(export.commands) == 3  # one LoRA
    launcher, flags = split_train_command(export.commands[2])
    assert launcher["--mixed_precision"] == "bf16"
    assert {k: v for k, v in flags.items() if k not in PATH_AND_NAME_FLAGS} == WAN21_TRAIN_FLAGS
    assert flags["--dit"] == model_path(project, "wan21-t2v-14b-fp8")
    assert flags["--output_name"] == "WAN2.1_Old_by-me"


def test_overrides_propagate(wan22, tmp_path):
    project = add_overrides(
        wan22,
        """
[dataset]
num_repeats = 2
resolution = [768, 768]

[lora]
network_dim = 32
network_alpha = 8

[optimizer]
learning_rate = 1e-4
betas = [0.9, 0.99]

[scheduler]
lr_warmup_steps = 50

[timesteps]
discrete_flow_shift = 3.0
preserve_distribution_shape = false

[training]
max_train_epochs = 40
seed = 42
attention = "sdpa"
max_data_loader_n_workers = 0

[models]
dir = "models"
vae = "/abs/vae.safetensors"
vae_dtype = "fp32"

[experts.high]
dit = "weights/high.safetensors"
min_timestep = 900
output_name = "Custom_{name}"
""",
    )
    export = musubi_export(project)
    cache_latents = parse_flags(export.commands[0][2:])
    assert cache_latents["--vae"] == "/abs/vae.safetensors"
    assert cache_latents["--vae_dtype"] == "float32"
    _, high = split_train_command(export.commands[2])
    _, low = split_train_command(export.commands[3])
    assert high["--dit"] == str(project.root / "weights" / "high.safetensors")
    assert low["--dit"] == str(
        project.root
        / "models"
        / MODEL_FILES["wan22-t2v-low-fp16"].repo
        / MODEL_FILES["wan22-t2v-low-fp16"].files[0]
    )
    for flags in (high, low):
        assert flags["--network_dim"] == "32" and flags["--network_alpha"] == "8"
        assert flags["--learning_rate"] == "1e-4"
        assert flags["--optimizer_args"] == "weight_decay=0.1 betas=(0.9,0.99)"
        assert flags["--lr_warmup_steps"] == "50"
        assert flags["--discrete_flow_shift"] == "3.0"
        assert "--preserve_distribution_shape" not in flags
        assert flags["--max_train_epochs"] == "40" and flags["--seed"] == "42"
        assert "--sdpa" in flags and "--xformers" not in flags
        assert flags["--max_data_loader_n_workers"] == "0"
        assert "--persistent_data_loader_workers" not in flags
    assert (high["--min_timestep"], high["--max_timestep"]) == ("900", "1000")
    assert high["--output_name"] == high["--metadata_title"] == "Custom_MyStyle_v1"
    assert low["--output_name"] == "WAN2.2-LowNoise_MyStyle_v1_by-me"
    data = tomllib.loads(export.dataset_toml)
    assert data["general"]["resolution"] == [768, 768]
    assert data["datasets"][0]["num_repeats"] == 2


def test_constant_schedule_with_warmup_uses_musubis_name(wan22):
    project = add_overrides(wan22, '[scheduler]\nlr_scheduler = "constant"\nlr_warmup_steps = 10\n')
    _, flags = split_train_command(musubi_export(project).commands[2])
    assert flags["--lr_scheduler"] == "constant_with_warmup"
    assert "--lr_scheduler_power" not in flags


def test_refuses_what_musubi_cannot_express(wan22):
    project = add_overrides(wan22, "[scheduler]\nlr_end = 1e-6\n")
    with pytest.raises(WanloraError, match="lr_end.*1e-07"):
        musubi_export(project)
    with pytest.raises(WanloraError, match="lr_end"):
        write_musubi_export(project)
    assert not (project.root / "export").exists()  # nothing half-written


def test_refuses_in_training_samples(tmp_path):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    project = add_overrides(project, "[sample]\nevery_n_epochs = 10\n")
    with pytest.raises(WanloraError, match="every_n_epochs"):
        musubi_export(project)


def test_write_keeps_a_changed_file_as_bak(wan22):
    folder = write_musubi_export(wan22)
    run_sh, dataset_toml = folder / "run.sh", folder / "dataset.toml"
    assert run_sh.stat().st_mode & stat.S_IXUSR
    first = run_sh.read_text()
    assert first == musubi_export(wan22).script
    assert dataset_toml.read_text() == musubi_export(wan22).dataset_toml

    write_musubi_export(wan22)  # unchanged: no backup
    assert not (folder / "run.sh.bak").exists()

    run_sh.write_text(first + "# my own edit\n")
    edited = run_sh.read_text()
    project = add_overrides(wan22, "[training]\nseed = 7\n")
    write_musubi_export(project)
    assert (folder / "run.sh.bak").read_text() == edited
    assert "--seed 7" in run_sh.read_text()
    assert not (folder / "dataset.toml.bak").exists()  # dataset.toml did not change


def test_cli_prints_and_writes(wan22):
    r = run_cli("export", "musubi", str(wan22.root))
    assert r.returncode == 0, r.stderr
    export = musubi_export(wan22)
    assert r.stdout.startswith(export.script)  # stdout is the runnable script ...
    assert "# [general]" in r.stdout  # ... followed by the dataset.toml as a comment
    folder = Path(wan22.root) / "export" / "musubi"
    assert (folder / "run.sh").read_text() == export.script
    assert "wrote" in r.stderr

    add_overrides(wan22, "[scheduler]\nlr_end = 1e-6\n")
    r = run_cli("export", "musubi", str(wan22.root))
    assert r.returncode == 1 and "lr_end" in r.stderr and "Traceback" not in r.stderr
