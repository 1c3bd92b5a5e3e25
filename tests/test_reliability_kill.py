"""kill -9 at random points of `wanlora train`, then `wanlora train` again, many times over.

A run is killed during caching, mid-step, inside a LoRA save, inside a state write (through
the WANLORA_FAULT_AT hooks of wanlora/faults.py, which hit those windows exactly) and after
random delays (SIGKILL from outside). After every kill: no half-written state is visible,
every LoRA file present reads back. After the last resume, both LoRAs equal, tensor for
tensor, those of an uninterrupted run. The counts are printed (docs/reliability.md).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import tomli_w
import tomllib
import torch

from test_reliability_zygote import Zygote
from wanlora.demo import create_demo_project
from wanlora.lora.file import read_lora_file
from wanlora.train.state import read_trainer_state

IMAGES = 6  # 6 steps per expert per epoch
SEED = int(os.environ.get("WANLORA_FAULT_SEED", "20251125"))
KILLS_WANTED = 24


def make_small_demo(root: Path) -> Path:
    """The demo project cut to 6 images, 1 epoch, a state every 2 steps (so 2 states/expert)."""
    create_demo_project(root, epochs=1)
    for image in sorted((root / "dataset").glob("*.png"))[IMAGES:]:
        image.unlink()
        image.with_suffix(".txt").unlink(missing_ok=True)
    toml = root / "wanlora.toml"
    data = tomllib.loads(toml.read_text(encoding="utf-8"))
    data["training"].update(max_train_epochs=1, save_every_n_epochs=1, save_state_every_n_steps=2)
    data.pop("sample", None)
    toml.write_text(tomli_w.dumps(data), encoding="utf-8")
    return root


def loras(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: read_lora_file(p)[0] for p in sorted((root / "output").glob("*.safetensors"))}


def check_no_half_state(root: Path) -> None:
    """What a resume can pick (step-* folders) is always complete and readable."""
    for expert_dir in (root / "output" / "state").glob("*"):
        for state in expert_dir.glob("step-*"):
            assert {p.name for p in state.iterdir()} == {
                "lora.safetensors",
                "trainer.safetensors",
                "trainer.json",
                "meta.json",
            }, state
            read_lora_file(state / "lora.safetensors")
            read_trainer_state(state)
    for lora in (root / "output").glob("*.safetensors"):
        read_lora_file(lora)


def leftovers(root: Path) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.name.endswith(".tmp") or p.name.startswith(".tmp-") or p.name == ".wanlora.lock"
    ]


def fault_plan(rng: random.Random, ref_seconds: float) -> tuple[str, dict, float | None]:
    """One kill: a named hook at a random occurrence, or SIGKILL after a random delay."""
    kind = rng.choice(
        ["cache", "cache_file", "step", "state", "state_file", "lora_file", "delay", "delay"]
    )
    # occurrences are counted per process and a resumed run has less left to do: small N
    rules = {
        "cache": f"cache_write:{rng.randint(1, IMAGES)}",
        "cache_file": f"atomic_write[*/cache/*]:{rng.randint(1, IMAGES)}",
        "step": f"step:{rng.randint(1, 4)}",
        "state": f"state_write:{rng.randint(1, 2)}",
        "state_file": f"atomic_write[*/state/*]:{rng.randint(1, 2)}",
        "lora_file": "atomic_write[*Noise*]:1",
    }
    if kind == "delay":
        return kind, {}, rng.uniform(0.2, 0.7 * ref_seconds)
    return kind, {"WANLORA_FAULT_AT": rules[kind]}, None


def test_kill_minus_9_anywhere_then_resume_gives_the_uninterrupted_loras(tmp_path):
    template = make_small_demo(tmp_path / "template")
    zygote = Zygote(tmp_path, {"WANLORA_MODELS_DIR": str(tmp_path / "models-dir")})
    rng = random.Random(SEED)
    counts = {"injected": 0, "survived": 0, "not_reached": 0, "runs": 0, "rounds": 0}
    by_kind: dict[str, int] = {}
    try:
        ref = tmp_path / "reference"
        shutil.copytree(template, ref)
        first = zygote.run("train", str(ref), "--device", "cpu")
        assert first.code == 0, first.output
        expected = loras(ref)
        assert len(expected) == 2
        ref_seconds = first.seconds
        print(f"\nuninterrupted run: {ref_seconds:.1f} s")

        while counts["injected"] < KILLS_WANTED:
            counts["rounds"] += 1
            project = tmp_path / f"round-{counts['rounds']}"
            shutil.copytree(template, project)
            round_kills = []
            for _ in range(12):  # up to 12 kills on one project before letting it finish
                kind, env, delay = fault_plan(rng, ref_seconds)
                result = zygote.run(
                    "train", str(project), "--device", "cpu", env=env, kill_after=delay
                )
                counts["runs"] += 1
                if not result.killed:  # the run got to the end before the fault point
                    assert result.code == 0, result.output
                    counts["not_reached"] += 1
                    break
                counts["injected"] += 1
                by_kind[kind] = by_kind.get(kind, 0) + 1
                round_kills.append(
                    env["WANLORA_FAULT_AT"] if env else f"SIGKILL after {delay:.2f}s"
                )
                check_no_half_state(project)
            else:
                done = zygote.run("train", str(project), "--device", "cpu")
                counts["runs"] += 1
                assert done.code == 0, done.output
            got = loras(project)
            assert got.keys() == expected.keys(), round_kills
            for name, tensors in expected.items():
                assert got[name].keys() == tensors.keys()
                for key, tensor in tensors.items():
                    assert torch.equal(got[name][key], tensor), (name, key, round_kills)
            assert leftovers(project) == [], round_kills
            counts["survived"] += len(round_kills)
    finally:
        zygote.close()
    print(f"\nkill -9 suite (seed {SEED}): {counts}, by kind {dict(sorted(by_kind.items()))}")
    assert counts["survived"] == counts["injected"] >= 20
