"""A full disk, a corrupt cache, two runs on one project: each caught, nothing lost."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli_run import run_cli
from test_reliability_kill import make_small_demo
from wanlora.errors import WanloraError
from wanlora.run import lock as lock_mod
from wanlora.run.lock import lock_path, project_lock

NO_SPACE = re.compile(r"no space left on (\S+) \(\d+\.\d GB free\): free \d+ GB and run again")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, zygote):
    """The small demo, trained once (cache, states, both LoRAs)."""
    root = make_small_demo(tmp_path_factory.mktemp("trained") / "project")
    result = zygote.run("train", str(root), "--device", "cpu")
    assert result.code == 0, result.output
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "logs" not in p.parts
    }


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


def one_line_error(result) -> str:
    assert result.code == 1, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors, result.output
    return " ".join(result.output[result.output.index("error:") :].split())


# --- disk full --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule, folder",
    [
        ("atomic_write[*Noise*]:1:enospc", "output"),  # the final LoRA file
        ("state_write:1:enospc", "state"),  # a state folder, half written
        ("atomic_write[*/state/*]:1:enospc", "state"),  # the LoRA inside a state
    ],
)
def test_disk_full_while_saving_is_one_clear_line_and_keeps_the_previous_files(
    trained, zygote, tmp_path, rule, folder
):
    root = tmp_path / "project"
    shutil.copytree(trained, root)
    before = snapshot(root)
    result = zygote.run(
        "train", str(root), "--device", "cpu", "--overwrite", env={"WANLORA_FAULT_AT": rule}
    )
    message = one_line_error(result)
    match = NO_SPACE.search(message)
    assert match, message
    assert folder in Path(match[1]).parts
    assert temp_files(root) == []
    after = snapshot(root)
    # an --overwrite run restarts from scratch; whatever it had not replaced yet is untouched,
    # and every LoRA present is the previous run's
    for name in ("WAN2.2-HighNoise_Demo_v1_by-wanlora.safetensors",):
        assert after[f"output/{name}"] == before[f"output/{name}"]
    for path, digest in after.items():
        if path.startswith("output/WAN"):
            assert digest == before[path], path


def test_disk_full_while_caching_is_one_clear_line(trained, zygote, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(trained, root)
    shutil.rmtree(root / "cache")
    result = zygote.run(
        "cache",
        str(root),
        "--device",
        "cpu",
        env={"WANLORA_FAULT_AT": "atomic_write[*/cache/*]:2:enospc"},
    )
    assert NO_SPACE.search(one_line_error(result))
    assert temp_files(root) == []
    assert len(list((root / "cache" / "latents").glob("*.safetensors"))) == 1  # kept


# --- out of GPU memory (another program fills the card) ------------------------------------
OOM_FIX = "close other programs that use the GPU (`nvidia-smi` lists them)"


def test_out_of_memory_while_loading_the_model_is_one_clear_line(trained, zygote, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(trained, root)
    before = snapshot(root)
    result = zygote.run(
        "train", str(root), "--device", "cpu", "--overwrite",
        env={"WANLORA_FAULT_AT": "model_load:1:oom"},
    )  # fmt: skip
    message = one_line_error(result)
    assert "high: out of GPU memory while loading wan2.2_t2v_high_noise_tiny_fp16" in message
    assert OOM_FIX in message and "bug" not in message
    assert snapshot(root) == before  # nothing of the previous run touched


def test_out_of_memory_in_a_worker_process_is_one_clear_line(trained, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(trained, root)
    result = run_cli(
        "train", str(root), "--devices", "cpu,cpu", "--overwrite",
        env={"WANLORA_FAULT_AT": "model_load:1:oom"},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "out of GPU memory while loading" in output and OOM_FIX in output, output
    assert "Traceback" not in output and "bug" not in output, output
    assert output.count("run the same command again to resume") == 1, output


def test_out_of_memory_outside_training_is_not_called_a_bug(trained, zygote, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(trained, root)
    shutil.rmtree(root / "cache")
    result = zygote.run(
        "cache", str(root), "--device", "cpu", env={"WANLORA_FAULT_AT": "cache_write:1:oom"}
    )
    message = one_line_error(result)
    assert message.startswith("error: out of GPU memory (CUDA out of memory")
    assert "nvidia-smi" in message and "bug" not in message


def test_a_real_write_failure_from_safetensors_and_torch_save_is_recognised(tmp_path):
    """RLIMIT_FSIZE makes real writes fail half-way (EFBIG), like a disk that fills up."""
    script = textwrap.dedent(
        f"""
        import resource, signal, torch
        from pathlib import Path
        from wanlora.errors import WanloraError
        from wanlora.lora.file import save_lora_file
        from wanlora.train.state import TrainState, save_state
        out = Path({str(tmp_path)!r})
        save_lora_file(out / "lora.safetensors", {{"a": torch.ones(10)}}, {{}})  # the previous
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        big = {{"a": torch.ones(100_000)}}
        try:
            save_lora_file(out / "lora.safetensors", big, {{}})
        except WanloraError as exc:
            print("LORA:", exc)
        p = torch.nn.Parameter(torch.ones(40_000))
        opt = torch.optim.AdamW([p])
        p.grad = torch.ones_like(p)
        opt.step()
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        try:
            save_state(out, "high", TrainState(1, 0, 1, False, "d", "r"), {{"a": torch.ones(10)}},
                       opt, sched, torch.amp.GradScaler("cpu", enabled=False),
                       torch.Generator().manual_seed(0))
        except WanloraError as exc:
            print("STATE:", exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert NO_SPACE.search(lines["LORA"]) and str(tmp_path) in lines["LORA"]
    assert NO_SPACE.search(lines["STATE"]) and "state" in lines["STATE"]
    assert load_file(tmp_path / "lora.safetensors")["a"].shape == (10,)  # previous file intact
    assert temp_files(tmp_path) == []
    assert not list((tmp_path / "state" / "high").iterdir())


# --- corrupt cache -----------------------------------------------------------------------


def test_corrupt_or_truncated_cache_entries_are_recomputed_not_trained_on(
    trained, zygote, tmp_path
):
    root = tmp_path / "project"
    shutil.copytree(trained, root)
    latents = sorted((root / "cache" / "latents").glob("*.safetensors"))
    texts = sorted((root / "cache" / "text").glob("*.safetensors"))
    good = {p: p.read_bytes() for p in [*latents, *texts]}
    good_tensors = {p: {k: t.clone() for k, t in load_file(p).items()} for p in good}  # no mmap
    # 1. truncated latent
    latents[0].write_bytes(good[latents[0]][: len(good[latents[0]]) // 2])
    # 2. a latent with flipped bytes in the tensor data (valid file, wrong sha256)
    data = bytearray(good[latents[1]])
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])
    latents[1].write_bytes(bytes(data))
    # 3. a latent with its tensor header cut off
    latents[2].write_bytes(good[latents[2]][:8])
    # (not covered: a valid entry copied over another one; the entry does not record its key,
    # see docs/reliability.md)
    # 4. an empty text entry; 5. a text entry whose tensor was replaced, metadata kept
    texts[0].write_bytes(b"")
    tensor = load_file(texts[1])["context"]
    from safetensors import safe_open

    with safe_open(str(texts[1]), framework="pt") as f:
        meta = f.metadata()
    save_file({"context": tensor * 0 + 1}, str(texts[1]), metadata=meta)
    # 6. garbage
    texts[2].write_bytes(os.urandom(300))

    result = zygote.run("cache", str(root), "--device", "cpu")
    assert result.code == 0, result.output
    text = " ".join(result.output.split())
    assert "latents 3 computed, 3 reused" in text, text
    assert "text 3 computed, 3 reused" in text, text
    for path, tensors in good_tensors.items():  # recomputed to the very same tensors
        again = load_file(path)
        assert all(torch.equal(again[k], t) for k, t in tensors.items()), path
    assert temp_files(root) == []


def test_training_refuses_an_entry_that_goes_bad_after_caching(trained, tmp_path):
    """load_cached_tensors verifies again: a bad entry at training time is an error."""
    from wanlora.cache.build import CacheEntry, load_cached_tensors
    from wanlora.dataset.items import load_items
    from wanlora.recipes import load_project

    root = tmp_path / "project"
    shutil.copytree(trained, root)
    project = load_project(root)
    item = load_items(project)[0]
    latent = next((root / "cache" / "latents").glob("*.safetensors"))
    text = next((root / "cache" / "text").glob("*.safetensors"))
    latent.write_bytes(latent.read_bytes()[:100])
    with pytest.raises(WanloraError, match="missing or corrupt"):
        load_cached_tensors([CacheEntry(item, latent, text)])


# --- two runs at once ----------------------------------------------------------------------

HOLDER = """
import sys, time
from wanlora.run.lock import project_lock
with project_lock(sys.argv[1], "train"):
    print("locked", flush=True)
    time.sleep(120)
"""


def hold_lock(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_train_cache_or_caption_on_the_same_project_refuses_naming_the_pid(
    trained, zygote, tmp_path
):
    root = tmp_path / "project"
    shutil.copytree(trained, root)
    holder = hold_lock(root)
    try:
        before = snapshot(root)
        for command, *options in (
            ("train", "--device", "cpu"),
            ("cache", "--device", "cpu"),
            ("caption", "--base-url", "http://127.0.0.1:9/v1"),  # refused before any request
        ):
            result = zygote.run(command, str(root), *options)
            message = one_line_error(result)
            assert f"pid {holder.pid}" in message and "in use by another wanlora run" in message
            assert f"kill {holder.pid}" in message
        assert snapshot(root) == before
        with pytest.raises(WanloraError, match=f"pid {holder.pid}"), project_lock(root):
            pass  # in-process too
    finally:
        holder.kill()
        holder.wait()
    # killed: the lock file stays, naming a dead pid; the next run clears it and trains
    assert json.loads(lock_path(root).read_text())["pid"] == holder.pid
    result = zygote.run("train", str(root), "--device", "cpu")
    assert result.code == 0, result.output
    assert "cleared a stale lock" in " ".join(result.output.split())
    assert not lock_path(root).exists()


def test_lock_is_reentrant_in_one_process_and_removed_after(tmp_path):
    with project_lock(tmp_path, "demo"):
        info = json.loads(lock_path(tmp_path).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "demo" and info["host"]
        with project_lock(tmp_path, "train"):
            pass
        assert lock_path(tmp_path).exists()
    assert not lock_path(tmp_path).exists()


def test_without_flock_a_pid_file_lock_still_refuses_live_and_clears_dead(tmp_path, monkeypatch):
    import socket

    monkeypatch.setattr(lock_mod, "fcntl", None)  # e.g. a network file system
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = {"pid": sleeper.pid, "host": socket.gethostname(), "started": time.time()}
        lock_path(tmp_path).write_text(json.dumps(info))
        with pytest.raises(WanloraError, match=f"pid {sleeper.pid}"), project_lock(tmp_path):
            pass
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    with project_lock(tmp_path):  # the pid is gone: stale, cleared
        assert json.loads(lock_path(tmp_path).read_text())["pid"] == os.getpid()
    assert not lock_path(tmp_path).exists()
