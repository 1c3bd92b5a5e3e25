"""Hostile inputs through the real CLI: one clear line, exit 1, no traceback, nothing written.
And secrets: tokens in the environment never reach a file or the terminal."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_reliability_kill import make_small_demo
from test_reliability_zygote import Zygote

MARKER = Path("/tmp/wanlora-pickle-ran")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_small_demo(tmp_path_factory.mktemp("inputs") / "project")


def listing(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def set_toml(root: Path, section: str, line: str) -> None:
    text = (root / "wanlora.toml").read_text(encoding="utf-8")
    header = f"[{section}]\n"
    text = (
        text.replace(header, header + line + "\n", 1)
        if header in text
        else (text + f"\n{header}{line}\n")
    )
    (root / "wanlora.toml").write_text(text, encoding="utf-8")


def drop_key(root: Path, key: str) -> None:
    lines = (root / "wanlora.toml").read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not line.startswith(f"{key} =")]
    (root / "wanlora.toml").write_text("\n".join(kept) + "\n", encoding="utf-8")


def png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature + IHDR claiming width x height, then a tiny IDAT and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _first_image(root: Path) -> Path:
    return sorted((root / "dataset").glob("*.png"))[0]


def _dit(root: Path) -> Path:
    return next((root / "models").glob("*high_noise*.safetensors"))


def _wrong_shape_dit(root: Path) -> None:
    path = _dit(root)
    tensors = load_file(path)
    key = next(k for k in tensors if k.endswith("self_attn.q.weight"))
    tensors[key] = tensors[key][:, :-8].contiguous()
    save_file(tensors, str(path))


def _pickle_as_safetensors(root: Path) -> None:
    _dit(root).write_bytes(pickle.dumps({"weight": Evil()}))


def _evil_text_encoder(root: Path) -> None:
    path = next((root / "models").glob("*.pth"))
    torch.save({"x": Evil()}, path)


def _outside_symlink(root: Path) -> None:
    outside = root.parent / "outside-secret.txt"
    outside.write_text("not an image")
    (root / "dataset" / "linked.png").symlink_to(outside)
    (root / "dataset" / "linked.txt").write_text("a caption")


def _traversal_toml(root: Path) -> None:
    (root / "dataset.toml").write_text(
        '[general]\nresolution = [64, 64]\ncaption_extension = ".txt"\n\n'
        '[[datasets]]\nimage_directory = "../../../../../../../../etc"\n',
        encoding="utf-8",
    )
    set_toml(root, "dataset", 'dataset_toml = "dataset.toml"')


def _bomb(root: Path) -> None:
    png_header_only(root / "dataset" / "bomb.png", 50_000, 50_000)
    (root / "dataset" / "bomb.txt").write_text("flat demo shapes, a bomb")


def _huge_caption(root: Path) -> None:
    _first_image(root).with_suffix(".txt").write_text("flat demo shapes " * 600_000)


CASES = {
    "toml_syntax": lambda r: (r / "wanlora.toml").write_text("recipe = \n[[[", encoding="utf-8"),
    "wrong_type": lambda r: set_toml(r, "lora", 'network_dim = "sixteen"'),
    "negative_lr": lambda r: set_toml(r, "optimizer", "learning_rate = -0.0003"),
    "rank_0": lambda r: set_toml(r, "lora", "network_dim = 0"),
    "resolution_not_16": lambda r: (
        drop_key(r, "resolution"),
        set_toml(r, "dataset", "resolution = [100, 100]"),
    ),
    "min_over_max_timestep": lambda r: set_toml(
        r, "experts.low", "min_timestep = 900\nmax_timestep = 100"
    ),
    "epochs_absurd": lambda r: (
        drop_key(r, "max_train_epochs"),
        set_toml(r, "training", "max_train_epochs = -5"),
    ),
    "unknown_key": lambda r: set_toml(r, "training", "learnin_rate = 1"),
    "path_traversal_dataset_toml": _traversal_toml,
    "symlink_outside_to_non_image": _outside_symlink,
    "decompression_bomb_header": _bomb,
    "caption_10MB": _huge_caption,
    "dit_is_a_pickle": _pickle_as_safetensors,
    "dit_wrong_shapes": _wrong_shape_dit,
    "text_encoder_malicious_pickle": _evil_text_encoder,
    "dit_truncated": lambda r: _dit(r).write_bytes(_dit(r).read_bytes()[:5000]),
    "dit_empty": lambda r: _dit(r).write_bytes(b""),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_rejected_in_one_line_and_nothing_is_written(
    case, template, zygote, tmp_path
):
    root = tmp_path / "project"
    shutil.copytree(template, root, symlinks=True)
    CASES[case](root)
    before = listing(root)
    MARKER.unlink(missing_ok=True)
    result = zygote.run("train", str(root), "--device", "cpu")
    print(f"{case}: exit {result.code}: {result.output.strip().splitlines()[-1:]}")
    assert result.code == 1, result.output
    assert "Traceback" not in result.output, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.output
    assert listing(root) == before, "files were written"
    assert not MARKER.exists(), "a pickle in a model file ran code"


# --- secrets -------------------------------------------------------------------------------

SECRETS = {
    "HF_TOKEN": "hf_SECRETtok3n0000reliability",
    "HUGGING_FACE_HUB_TOKEN": "hf_SECRETtok3n1111reliability",
    "OPENAI_API_KEY": "sk-SECRETkey2222reliability",
}


def test_secrets_in_the_environment_never_reach_files_or_output(template, tmp_path):
    z = Zygote(tmp_path / "logs-dir", SECRETS)
    (tmp_path / "logs-dir").mkdir()
    root = tmp_path / "project"
    shutil.copytree(template, root)
    outputs = []
    try:
        for argv in (
            ["check", str(root)],
            ["train", str(root), "--device", "cpu"],
            ["inspect", "config", str(root)],
            ["export", "musubi", str(root)],
            ["demo", str(tmp_path / "demo"), "--epochs", "1"],
        ):
            result = z.run(*argv)
            assert result.code == 0, (argv, result.output)
            outputs.append(result.output)
    finally:
        z.close()
    scanned = 0
    for folder in (root, tmp_path / "demo"):
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                scanned += 1
                for secret in SECRETS.values():
                    assert secret.encode() not in data, path
    for text in outputs:
        for secret in SECRETS.values():
            assert secret not in text
    print(f"secrets: {scanned} files and {len(outputs)} command outputs scanned, no secret found")
    assert scanned > 50
