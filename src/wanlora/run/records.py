"""A run's record: what it was trained from, and how far it got (output/run.json).

    number          1, 2, ...: runs are numbered and kept (kept.py moves the older ones)
    status          running | interrupted | finished | failed
    started, ended  ISO dates (local time)
    settings        the resolved config (every field, as `wanlora inspect config` shows it)
    dataset         per training item (an image, or a clip of a video): the content hash of
                    its file and of its caption, its bucket and repeats
    models          per model file: name, size and fingerprint (cache/keys.file_fingerprint)
    experts         per expert: status, steps, final loss, and `from_run` when its LoRA was
                    carried over unchanged from an earlier run
    adopted         made for outputs trained before runs were recorded (adopt.py)

The record is written atomically (a temporary file renamed over it) at the start of a run
and at its end, so a kill leaves either the old or the new one. A record reads "running"
only while its process lives: `wanlora train` holds the project lock, so a "running" record
it finds is one whose process was killed (kill -9, a power cut), that is, interrupted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cache.build import model_paths
from ..cache.keys import file_fingerprint, sha256_file, video_sha256
from ..dataset.items import DatasetItem, load_items
from ..errors import WanloraError
from ..fsutil import atomic_path
from ..models.registry import resolve_model_path
from ..recipes import Project

RECORD_FORMAT = 1
RUNNING, INTERRUPTED, FINISHED, FAILED = "running", "interrupted", "finished", "failed"


@dataclass
class ExpertRecord:
    status: str = "pending"  # pending | running | interrupted | finished | failed
    steps: int | None = None
    final_loss: float | None = None
    from_run: int | None = None  # carried over unchanged from this run


@dataclass
class Snapshot:
    """What a run is trained from, as the project stands now."""

    settings: dict[str, Any]
    dataset: dict[str, dict[str, Any]]  # item -> {"file", "caption", "caption_file", ...}
    models: dict[str, dict[str, Any] | None]  # kind -> {"name", "size", "fingerprint"}


@dataclass
class RunRecord:
    number: int
    status: str
    started: str
    ended: str | None = None
    settings: dict[str, Any] | None = None  # None: adopted, trained before records
    dataset: dict[str, dict[str, Any]] | None = None
    models: dict[str, dict[str, Any] | None] | None = None
    experts: dict[str, ExpertRecord] = field(default_factory=dict)
    adopted: bool = False
    error: str | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        if self.settings is None or self.dataset is None or self.models is None:
            return None
        return Snapshot(self.settings, self.dataset, self.models)

    def finished_experts(self) -> list[str]:
        return [e for e, r in self.experts.items() if r.status == FINISHED]


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def take_snapshot(project: Project, items: list[DatasetItem] | None = None) -> Snapshot:
    """Settings, the content of every image/video and caption, the model files' identity."""
    items = load_items(project) if items is None else items
    hashes: dict[Path, str] = {}  # a video's clips share one hash of its file
    dataset = {}
    for item in items:
        if item.image_path not in hashes:
            hashes[item.image_path] = (
                sha256_file(item.image_path) if item.clip is None else video_sha256(item.image_path)
            )
        dataset[_item_name(project, item)] = {
            "file": hashes[item.image_path],
            "caption": hashlib.sha256(item.caption.encode()).hexdigest(),
            "caption_file": item.image_path.stem + project.config.dataset.caption_extension,
            "bucket": f"{item.bucket[0]}x{item.bucket[1]}",
            "repeats": item.num_repeats,
        }
    return Snapshot(project.config.model_dump(mode="json"), dataset, model_identities(project))


def _item_name(project: Project, item: DatasetItem) -> str:
    try:
        name = str(item.image_path.relative_to(project.dataset_dir))
    except ValueError:  # a dataset.toml folder outside the dataset folder
        name = str(item.image_path)
    return name if item.clip is None else f"{name}#{item.clip.name}"


def model_identities(project: Project) -> dict[str, dict[str, Any] | None]:
    """Each model file's name, size and fingerprint (None: not there yet)."""
    paths = dict(model_paths(project))
    for expert, settings in project.config.experts.items():
        paths[f"dit.{expert}"] = resolve_model_path(settings.dit, project.models_dir, project.root)
    found: dict[str, dict[str, Any] | None] = {}
    for kind, path in paths.items():
        if not path.exists():
            found[kind] = None
            continue
        size = path.stat().st_size if path.is_file() else None
        found[kind] = {"name": path.name, "size": size, "fingerprint": file_fingerprint(path)}
    return found


def read_record(path: Path) -> RunRecord | None:
    """The record at `path` (None: there is none)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise WanloraError(
            f"{path}: run record is unreadable ({type(exc).__name__})",
            "restore it from a backup, or delete it (the run's files stay; its history is lost)",
        ) from None
    try:
        if data.pop("format") != RECORD_FORMAT:
            raise ValueError("format")
        experts = {e: ExpertRecord(**r) for e, r in data.pop("experts").items()}
        return RunRecord(**data, experts=experts)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise WanloraError(
            f"{path}: not a wanlora run record (format {RECORD_FORMAT})",
            "restore it from a backup, or delete it (the run's files stay; its history is lost)",
        ) from None


def write_record(path: Path, record: RunRecord) -> None:
    data = {"format": RECORD_FORMAT, **asdict(record)}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
