"""`check_dataset`: walk a project's dataset folders and apply every lint rule, in order.

Per folder: what the folder holds (`files`); per image: the image file (`images`), then its
caption (`captions`); then the rules across the whole dataset: the image count (`files`),
near-duplicates (`duplicates`) and captions on the wrong images (`captions`, which skips
pairs of images that look alike). Dataset problems become findings; nothing raises.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import WanloraError
from ...recipes import PROJECT_FILE, Project, load_project, load_recipe
from ..entry import DatasetEntry
from ..scan import scan_folder
from ..sources import dataset_sources
from ..tokens import TokenCounter, project_token_counter
from .captions import caption_mixups, check_caption
from .duplicates import near_duplicates
from .files import count_findings, folder_findings
from .images import check_image
from .report import CheckedImage, CheckReport, ImageReport
from .videos import check_task_needs_videos, check_videos, largest_bucket


def check_dataset(project: Project, token_counter: TokenCounter | None = None) -> CheckReport:
    """Lint every dataset folder of `project`; never raises for dataset problems."""
    report = CheckReport()
    counter = token_counter or project_token_counter(project)
    report.token_count_source = counter.note
    report.tokens_are_estimate = counter.is_estimate
    try:
        sources = dataset_sources(project)
    except WanloraError as exc:
        report.error(project.config_file, exc.one_line())
        return report
    if sources.ignored_keys:
        report.warn(
            sources.dataset_toml,
            "keys wanlora ignores: " + "; ".join(sources.ignored_keys),
        )
    where = sources.dataset_toml or project.config_file
    _resolution_findings([*sources.entries, *sources.videos], project, where, report)
    trigger = project.config.project.trigger
    checked: list[CheckedImage] = []
    for entry in sources.entries:
        checked.extend(_check_entry(entry, project, counter, trigger, report))
    report.videos = check_videos(sources.videos, project, counter, report)
    check_task_needs_videos(project.config.task, report.videos, project.dataset_dir, report)
    report.largest_bucket, report.largest_bucket_tokens = largest_bucket(
        [image.bucket for image in report.images], report.videos, project.config.task
    )

    count_findings(checked, project, report, has_videos=bool(sources.videos))
    alike = near_duplicates(checked, report)
    caption_mixups(checked, trigger, alike, report)
    return report


def _resolution_findings(entries, project: Project, where: Path, report: CheckReport) -> None:
    """A dataset resolution whose sides the task's VAE and patch do not divide (TI2V-5B: 32)."""
    step, task = project.config.size_step, project.config.task
    for entry in entries:
        width, height = entry.resolution
        if width % step or height % step:
            report.error(
                where,
                f"resolution {width}x{height} ({entry.source}): {task} needs sides that are "
                f"multiples of {step} -- use e.g. {max(step, width // step * step)}x"
                f"{max(step, height // step * step)}",
            )


def _check_entry(
    entry: DatasetEntry,
    project: Project,
    counter: TokenCounter,
    trigger: str | None,
    report: CheckReport,
) -> list[CheckedImage]:
    try:
        scan = scan_folder(entry.image_directory, entry.caption_extension, entry.source)
    except WanloraError as exc:
        report.error(entry.image_directory, exc.one_line())
        return []
    folder = entry.image_directory
    folder_findings(scan, folder, project, report)

    results = []
    for image_path in scan.images:
        image_report = ImageReport(
            path=str(image_path),
            width=None,
            height=None,
            bucket=None,
            num_repeats=entry.num_repeats,
        )
        report.images.append(image_report)
        phash = check_image(image_path, entry, folder, image_report, report)
        caption = check_caption(
            image_path, scan.captions[image_path], folder, counter, trigger, image_report, report
        )
        results.append(CheckedImage(image_report, image_path, caption, phash))
    return results


def project_for_check(directory: str | Path) -> Project:
    """The project in `directory`, or, for a plain folder of images, the wan22-t2v recipe's
    settings applied to that folder (so `wanlora check some/images` works before `init`)."""
    root = Path(directory).expanduser()
    if (root / PROJECT_FILE).is_file() or not root.is_dir():
        return load_project(root)
    config = load_recipe("wan22-t2v")
    config.dataset.directory = "."
    return Project(root=root.resolve(), config=config)
