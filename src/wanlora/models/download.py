"""`wanlora download`: fetch the model files a project references from the Hugging Face Hub.

Files land in the shared models folder as <models_dir>/<repo>/<filename> (the registry's
layout). huggingface_hub does the talking to the hub (endpoint, token, headers, error types);
the byte transfer is our own small loop because huggingface_hub 2.x deletes a partial file when
a download fails, and a 28 GB expert must survive a dropped connection or a Ctrl-C:

- bytes go to `<file>.<etag-hash>.incomplete` next to the target; a later run sends
  `Range: bytes=<have>-` and appends, then renames the file into place once its size is right;
- a file already present with the size the hub reports is skipped (one HEAD request, no GET);
- free disk is checked against what is left to fetch before the first byte is written.

The endpoint (HF_ENDPOINT) and the token (HF_TOKEN, or a stored `hf auth login`) are read when
a download starts, not at import. The token goes only into the Authorization header of
requests to the hub itself (never to a CDN it redirects to) and is never printed or written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import filelock
import httpx2
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from ..errors import WanloraError
from ..recipes.project import PROJECT_FILE, Project
from ..recipes.schema import RecipeConfig
from .registry import MODEL_FILES, ModelFile, resolve_model_path

DEFAULT_ENDPOINT = "https://huggingface.co"
REVISION = "main"
KINDS = ("dit", "vae", "text_encoder", "tokenizer")
# seconds without a byte before a transfer counts as stalled (then it is retried / resumed)
READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ModelRef:
    """One model a project's config references: `key = value` (a registry id or a path)."""

    key: str  # e.g. "models.vae" or "experts.high.dit"
    value: str
    kind: str
    expert: str | None = None

    @property
    def registry(self) -> ModelFile | None:
        return MODEL_FILES.get(self.value)


def referenced_models(config: RecipeConfig) -> list[ModelRef]:
    """Every model the config names: VAE, text encoder, tokenizer, then each expert's DiT."""
    refs = [
        ModelRef("models.vae", config.models.vae, "vae"),
        ModelRef("models.text_encoder", config.models.text_encoder, "text_encoder"),
        ModelRef("models.tokenizer", config.models.tokenizer, "tokenizer"),
    ]
    for name, expert in config.experts.items():
        refs.append(ModelRef(f"experts.{name}.dit", expert.dit, "dit", expert=name))
    return refs


def select_models(refs: Sequence[ModelRef], only: Iterable[str] | None) -> list[ModelRef]:
    """Keep the refs `--only` names: expert names, kinds, or registry ids (all refs if none)."""
    tokens = [t.strip() for item in (only or []) for t in item.split(",") if t.strip()]
    if not tokens:
        return list(refs)
    valid = {r.expert for r in refs if r.expert} | set(KINDS) | {r.value for r in refs}
    unknown = [t for t in tokens if t not in valid]
    if unknown:
        raise WanloraError(
            f"--only {', '.join(unknown)}: not an expert, kind or model of this project",
            f"use one of: {', '.join(sorted(valid))}",
        )
    return [r for r in refs if {r.expert, r.kind, r.value} & set(tokens)]


@dataclass
class FileJob:
    """One file of a registry model: where it goes, what the hub says about it, what to do."""

    model_id: str
    repo: str
    filename: str
    dest: Path
    approx_bytes: int
    optional: bool = False
    size: int | None = None  # exact size the hub reports (None: unknown / optional and absent)
    etag: str | None = None
    location: str | None = None  # where the bytes are (the hub, or a CDN it redirects to)
    action: str = "fetch"  # "skip" (present, right size) | "fetch" | "resume" | "absent"
    have: int = 0  # bytes already on disk in the partial file

    @property
    def label(self) -> str:
        return f"{self.repo}/{self.filename}"

    @property
    def expected_bytes(self) -> int:
        return self.size if self.size is not None else self.approx_bytes

    @property
    def remaining(self) -> int:
        return 0 if self.action in ("skip", "absent") else max(self.expected_bytes - self.have, 0)

    def partial_path(self) -> Path:
        tag = hashlib.sha256((self.etag or "").encode()).hexdigest()[:12]
        return self.dest.with_name(f"{self.dest.name}.{tag}.incomplete")


@dataclass
class DownloadPlan:
    models_dir: Path
    jobs: list[FileJob]
    local: list[tuple[ModelRef, Path]]  # refs given as paths: checked to exist, not downloaded
    free_bytes: int
    endpoint: str

    @property
    def bytes_to_fetch(self) -> int:
        return sum(j.remaining for j in self.jobs)


# (job, bytes of this file on disk so far) -> None; called as bytes arrive
Progress = Callable[[FileJob, int], None]


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def plan_download(project: Project, only: Iterable[str] | None = None) -> DownloadPlan:
    """Ask the hub (HEAD only) what each selected file is, and compare with the disk."""
    if hf_constants.is_offline_mode():
        raise WanloraError(
            "HF_HUB_OFFLINE is set, so nothing can be downloaded",
            "unset HF_HUB_OFFLINE for this command",
        )
    endpoint = hub_endpoint()
    models_dir = project.models_dir
    refs = select_models(referenced_models(project.config), only)
    local: list[tuple[ModelRef, Path]] = []
    jobs: list[FileJob] = []
    for ref in refs:
        model = ref.registry
        if model is None:
            path = resolve_model_path(ref.value, models_dir, project.root)
            if not path.exists():
                raise WanloraError(
                    f"{project.root / PROJECT_FILE}: {ref.key} = {ref.value!r}: {path} does not exist",
                    "fix the path, or use a registry id (see `wanlora inspect recipe`)",
                )
            local.append((ref, path))
            continue
        if any(j.model_id == model.id for j in jobs):
            continue  # two experts may share one file
        for filename, optional in [(f, False) for f in model.files] + [
            (f, True) for f in model.optional_files
        ]:
            approx = model.approx_bytes // max(len(model.files), 1)
            job = FileJob(
                model.id, model.repo, filename, models_dir / model.repo / filename, approx, optional
            )
            _describe(job, endpoint)
            jobs.append(job)
    return DownloadPlan(models_dir, jobs, local, free_disk_bytes(models_dir), endpoint)


def download_models(
    project: Project,
    only: Iterable[str] | None = None,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    retries: int = 3,
) -> DownloadPlan:
    """Fetch every selected file that is missing or incomplete; return the plan it followed.

    A dropped connection is resumed in place up to `retries` times; after that (or after a
    Ctrl-C) the partial file stays and the next run continues it.
    """
    plan = plan_download(project, only)
    if dry_run:
        return plan
    if plan.bytes_to_fetch > plan.free_bytes:
        raise WanloraError(
            f"not enough disk in {plan.models_dir}: {human_bytes(plan.bytes_to_fetch)} to download, "
            f"{human_bytes(plan.free_bytes)} free",
            "free some space, or point models.dir in wanlora.toml (or WANLORA_MODELS_DIR) at a bigger disk",
        )
    _make_dir(plan.models_dir)
    lock = filelock.FileLock(str(plan.models_dir / ".wanlora-download.lock"), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise WanloraError(
            f"another `wanlora download` is writing to {plan.models_dir}",
            "wait for it to finish (or stop it) and run this again",
        ) from None
    try:
        for job in plan.jobs:
            if job.action in ("fetch", "resume"):
                _fetch(job, plan.endpoint, progress, retries)
    finally:
        lock.release()
    return plan


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the disk that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


# --- talking to the hub -------------------------------------------------------------------


def _describe(job: FileJob, endpoint: str) -> None:
    """HEAD the file on the hub; decide skip / fetch / resume from what is on disk."""
    url = hf_hub_url(job.repo, job.filename, revision=REVISION, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    except Exception as exc:
        if job.optional and isinstance(exc, HfHubHTTPError) and _status(exc) == 404:
            job.action = "absent"  # e.g. a tokenizer.json the repo does not have
            return
        raise _hub_error(exc, job, endpoint) from None
    job.size, job.etag, job.location = meta.size, meta.etag, meta.location
    if job.dest.is_file() and (job.size is None or job.dest.stat().st_size == job.size):
        job.action = "skip"
        return
    partial = job.partial_path()
    for stale in job.dest.parent.glob(f"{job.dest.name}.*.incomplete"):
        if stale != partial:  # an older version of the file: its bytes cannot be continued
            stale.unlink(missing_ok=True)
    job.have = partial.stat().st_size if partial.is_file() else 0
    if job.size is not None and job.have > job.size:
        partial.unlink()
        job.have = 0
    job.action = "resume" if job.have else "fetch"


def _fetch(job: FileJob, endpoint: str, progress: Progress | None, retries: int) -> None:
    _make_dir(job.dest.parent)
    for attempt in range(retries + 1):
        try:
            _transfer(job, job.partial_path(), endpoint, progress)
            break
        except httpx2.TransportError as exc:
            if attempt == retries:
                partial = job.partial_path()
                have = partial.stat().st_size if partial.exists() else 0
                raise WanloraError(
                    f"{job.label}: connection lost after {human_bytes(have)} of "
                    f"{human_bytes(job.expected_bytes)} ({type(exc).__name__})",
                    "run the same command again: it resumes where it stopped",
                ) from None
            time.sleep(2**attempt - 1)  # 0 s, 1 s, 3 s, ...: a hiccup, then a real outage
            if attempt:  # the signed CDN link may have expired: ask the hub again
                _describe(job, endpoint)
    partial = job.partial_path()  # a new etag on re-ask means a new partial file
    size = partial.stat().st_size
    if job.size is not None and size != job.size:
        raise WanloraError(
            f"{job.label}: got {size} bytes, the hub says {job.size}",
            "run the same command again to resume the download",
        )
    os.replace(partial, job.dest)  # only a complete file ever has the final name
    if progress:
        progress(job, size)


def _transfer(job: FileJob, partial: Path, endpoint: str, progress: Progress | None) -> None:
    """GET the bytes not yet on disk (Range) and append them to the partial file."""
    have = partial.stat().st_size if partial.exists() else 0
    if job.size is not None and have == job.size:
        return
    url = job.location or hf_hub_url(job.repo, job.filename, revision=REVISION, endpoint=endpoint)
    on_hub = urlsplit(url).netloc == urlsplit(endpoint).netloc
    # the token is for the hub only; a CDN link is signed and must not see it
    headers = build_hf_headers(token=None if on_hub else False)
    headers["Accept-Encoding"] = "identity"  # sizes on disk must match the hub's sizes
    if have:
        headers["Range"] = f"bytes={have}-"
    timeout = httpx2.Timeout(30.0, read=READ_TIMEOUT_S)
    with get_session().stream(
        "GET", url, headers=headers, timeout=timeout, follow_redirects=True
    ) as response:
        if response.status_code == 416 and have:  # nothing left to send: already complete
            return
        try:
            hf_raise_for_status(response)
        except HfHubHTTPError as exc:
            raise _hub_error(exc, job, endpoint) from None
        mode = "ab" if (have and response.status_code == 206) else "wb"  # 200: server restarted
        done = have if mode == "ab" else 0
        with open(partial, mode) as f:
            for chunk in response.iter_bytes():
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(job, done)


def _status(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _hub_error(exc: Exception, job: FileJob, endpoint: str) -> WanloraError:
    """One clear line for each way talking to the hub fails (never the token)."""
    if isinstance(exc, OfflineModeIsEnabled):
        return WanloraError(
            "HF_HUB_OFFLINE is set, so nothing can be downloaded",
            "unset HF_HUB_OFFLINE for this command",
        )
    if isinstance(exc, HfHubHTTPError):
        code = _status(exc)
        if code in (401, 403):
            return WanloraError(
                f"{job.repo}: access denied by {endpoint} (HTTP {code}) for {job.filename}",
                "the repo is gated or private, or HF_TOKEN is wrong: accept the model's terms on "
                "its hub page and set HF_TOKEN to a valid read token",
            )
        if code == 404:
            return WanloraError(
                f"{job.label}: not found on {endpoint} (HTTP 404)",
                "the repo or file moved; download it by hand and set its path in wanlora.toml",
            )
        return WanloraError(
            f"{job.label}: {endpoint} answered HTTP {code}",
            "the hub may be having trouble; try again later",
        )
    if isinstance(exc, httpx2.TransportError):
        return WanloraError(
            f"cannot reach {endpoint} ({type(exc).__name__})",
            "check the network connection, or set HF_ENDPOINT to a reachable hub mirror",
        )
    return WanloraError(
        f"{job.label}: {endpoint} gave an unusable answer ({exc})", "check HF_ENDPOINT"
    )


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WanloraError(
            f"cannot create {path} ({exc.strerror})",
            "point models.dir in wanlora.toml (or WANLORA_MODELS_DIR) at a writable folder",
        ) from None
