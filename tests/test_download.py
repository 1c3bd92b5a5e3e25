"""`wanlora download` against a real HTTP server on 127.0.0.1 speaking the hub's protocol.

The real huggingface_hub client (metadata, headers, errors) and our transfer loop talk to
tests/hub_server.py; nothing is mocked and nothing leaves the machine.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest

from cli_run import run_cli
from hub_server import FakeHub
from wanlora.errors import WanloraError
from wanlora.models.download import download_models, plan_download
from wanlora.models.registry import MODEL_FILES
from wanlora.project_init import init_project

SECRET = "hf_TestSecretToken1234567890"


def payload(name: str, size: int) -> bytes:
    """Deterministic bytes, different for each file (so mixing files up is caught)."""
    seed = name.encode()
    return (seed * (size // len(seed) + 1))[:size]


def hub_files() -> dict[tuple[str, str], bytes]:
    files = {}
    for model in MODEL_FILES.values():
        for filename in model.files:  # no optional tokenizer.json: the hub 404s it
            size = 300_000 if model.kind == "dit" else 2_000
            files[(model.repo, filename)] = payload(filename, size)
    return files


@pytest.fixture
def hub(monkeypatch):
    # conftest sets HF_HUB_OFFLINE=1 before huggingface_hub reads it; these tests go online,
    # but only to 127.0.0.1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub(files=hub_files()) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


@pytest.fixture
def project(tmp_path):
    return init_project(tmp_path / "proj", "wan22-t2v", "Test_v1", "me")


def local(project, model_id: str, index: int = 0) -> Path:
    model = MODEL_FILES[model_id]
    return project.models_dir / model.repo / model.files[index]


def expected(model_id: str, index: int = 0) -> bytes:
    model = MODEL_FILES[model_id]
    return hub_files()[(model.repo, model.files[index])]


def test_downloads_everything_then_skips_complete_files(hub, project):
    plan = download_models(project)
    assert {j.action for j in plan.jobs} == {"fetch", "absent"}  # absent: optional tokenizer.json
    for model_id in ("wan22-t2v-high-fp16", "wan22-t2v-low-fp16", "wan21-vae", "umt5-xxl-enc-bf16"):
        assert local(project, model_id).read_bytes() == expected(model_id)
    tok = MODEL_FILES["umt5-xxl-tokenizer"]
    assert sorted(p.name for p in tok.local_path(project.models_dir).iterdir()) == sorted(tok.files)
    assert not list(project.models_dir.rglob("*.incomplete"))

    # the large files came from the "CDN" the hub redirected to, like the real hub's LFS files
    assert all(r.path.startswith("/cdn/") for r in hub.gets("wan_2.1_vae.safetensors"))

    hub.requests.clear()
    again = download_models(project)
    assert {j.action for j in again.jobs} == {"skip", "absent"}
    assert all(r.method == "HEAD" for r in hub.requests), "a complete file was downloaded again"


def test_wrong_size_file_is_replaced(hub, project):
    vae = local(project, "wan21-vae")
    vae.parent.mkdir(parents=True)
    vae.write_bytes(b"junk")
    download_models(project, only=["vae"])
    assert vae.read_bytes() == expected("wan21-vae")


def test_dropped_connection_resumes_with_range_on_next_run(hub, project):
    name = MODEL_FILES["wan22-t2v-high-fp16"].files[0]
    hub.cut_after[name] = 100_000
    with pytest.raises(WanloraError, match="connection lost .* run the same command again"):
        download_models(project, only=["high"], retries=0)
    dest = local(project, "wan22-t2v-high-fp16")
    assert not dest.exists(), "an incomplete file must not get the final name"
    (partial,) = dest.parent.glob(dest.name + ".*.incomplete")
    have = partial.stat().st_size
    assert 0 < have < 300_000
    assert expected("wan22-t2v-high-fp16").startswith(partial.read_bytes())

    plan = download_models(project, only=["high"])
    assert [j.action for j in plan.jobs] == ["resume"]
    last = hub.gets(name)[-1]
    assert last.headers["range"] == f"bytes={have}-"
    assert dest.read_bytes() == expected("wan22-t2v-high-fp16")
    assert not partial.exists()


def test_dropped_connection_is_resumed_within_one_run(hub, project):
    name = MODEL_FILES["wan21-vae"].files[0]
    hub.files[(MODEL_FILES["wan21-vae"].repo, name)] = payload(name, 200_000)
    hub.cut_after[name] = 50_000
    download_models(project, only=["wan21-vae"])
    first, second = hub.gets(name)
    assert "range" not in first.headers and second.headers["range"].startswith("bytes=")
    assert local(project, "wan21-vae").read_bytes() == payload(name, 200_000)


def test_token_is_sent_to_the_hub_only_and_never_shown(hub, project, tmp_path):
    hub.token = SECRET
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": SECRET, "HF_HUB_OFFLINE": "0"}
    r = run_cli("download", str(project.root), "--only", "vae,tokenizer", env=env)
    assert r.returncode == 0, r.stderr
    resolve = [q for q in hub.requests if "/resolve/" in q.path]
    cdn = [q for q in hub.requests if q.path.startswith("/cdn/")]
    assert resolve and cdn
    assert all(q.headers.get("authorization") == f"Bearer {SECRET}" for q in resolve)
    assert all("authorization" not in q.headers for q in cdn), "token leaked to the CDN"
    assert SECRET not in r.stdout + r.stderr
    for root in (project.root, project.models_dir):
        for path in root.rglob("*"):
            assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path

    # a wrong token: one line that says what to do, and still no token in it
    env["HF_TOKEN"] = SECRET + "x"
    r = run_cli("download", str(project.root), "--only", "high", env=env)
    assert r.returncode == 1
    assert "HTTP 401" in r.stderr and "HF_TOKEN" in r.stderr and "Traceback" not in r.stderr
    assert SECRET not in r.stdout + r.stderr


def test_gated_repo_without_token(hub, project):
    hub.token = SECRET
    with pytest.raises(WanloraError, match=r"access denied .*HTTP 401.* set HF_TOKEN"):
        download_models(project, only=["vae"])


def test_missing_file_names_repo_and_file(hub, project):
    model = MODEL_FILES["umt5-xxl-enc-bf16"]
    del hub.files[(model.repo, model.files[0])]
    with pytest.raises(WanloraError) as exc:
        download_models(project)
    assert f"{model.repo}/{model.files[0]}: not found" in str(exc.value)
    assert "HTTP 404" in str(exc.value)


def test_unreachable_endpoint(hub, project, monkeypatch):
    with FakeHub() as closed:
        dead = closed.endpoint  # a port nothing listens on once this server is gone
    monkeypatch.setenv("HF_ENDPOINT", dead)
    with pytest.raises(WanloraError, match=f"cannot reach {dead}"):
        download_models(project, only=["vae"])


def test_offline_mode_is_explained(project, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WanloraError, match="HF_HUB_OFFLINE"):
        download_models(project)


def test_refuses_when_disk_is_too_small(hub, project):
    name = MODEL_FILES["wan22-t2v-low-fp16"].files[0]
    hub.size_override[name] = 10**18  # an exabyte: no test machine has that free
    with pytest.raises(WanloraError, match=r"not enough disk .*1000000.0 TB to download, .* free"):
        download_models(project)
    assert not any(p.is_file() for p in project.models_dir.rglob("*") if p.suffix != ".lock")


def test_only_and_dry_run(hub, project):
    plan = download_models(project, only=["low", "vae"], dry_run=True)
    assert [j.model_id for j in plan.jobs] == ["wan21-vae", "wan22-t2v-low-fp16"]
    assert plan.bytes_to_fetch == 2_000 + 300_000
    assert plan.free_bytes > 0
    assert not any(r.method == "GET" for r in hub.requests)
    assert not project.models_dir.exists() or not any(project.models_dir.rglob("*.safetensors"))

    with pytest.raises(WanloraError, match="--only mid: .* use one of: .*high.*low"):
        plan_download(project, only=["mid"])


def test_paths_are_checked_not_downloaded(hub, project):
    config = project.config_file
    config.write_text(config.read_text() + '\n[experts.high]\ndit = "my/high.safetensors"\n')
    with pytest.raises(
        WanloraError, match=r"wanlora.toml: experts.high.dit = 'my/high.safetensors'"
    ):
        plan_download(_reload(project))
    own = project.root / "my" / "high.safetensors"
    own.parent.mkdir()
    own.write_bytes(b"x")
    plan = plan_download(_reload(project), only=["dit"])
    assert [ref.key for ref, _ in plan.local] == ["experts.high.dit"]
    assert [j.model_id for j in plan.jobs] == ["wan22-t2v-low-fp16"]


def _reload(project):
    from wanlora.recipes import load_project

    return load_project(project.root)
