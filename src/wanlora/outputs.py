"""Where a project's outputs go: the one place that names LoRA, state, sample, log and
report paths. train, sampling, report and the run layer all read it; none of them spells a
path under output/ by itself.

    output/
      <LoRA name>.safetensors   one per expert, named as the recipe names them
      state/<expert>/step-N/    resume states (train/state.py)
      samples/                  PNGs (and videos) rendered during and after training
      logs/<expert>/            TensorBoard event files
      report.html               the run's report
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .recipes import Project


@dataclass(frozen=True)
class OutputLayout:
    """The file names of one set of outputs, rooted at `root` (a project's output/)."""

    root: Path
    lora_names: dict[str, str]  # expert -> the recipe's output name (no suffix)

    @classmethod
    def of(cls, project: Project) -> OutputLayout:
        names = {e: project.config.output_name(e) for e in project.config.experts}
        return cls(project.output_dir, names)

    def lora(self, expert: str) -> Path:
        return self.root / f"{self.lora_names[expert]}.safetensors"

    @property
    def state_root(self) -> Path:
        return self.root / "state"

    def state_dir(self, expert: str) -> Path:
        return self.state_root / expert

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def logs_root(self) -> Path:
        return self.root / "logs"

    def logs_dir(self, expert: str) -> Path:
        return self.logs_root / expert

    @property
    def report(self) -> Path:
        return self.root / "report.html"


def lora_path(project: Project, expert: str) -> Path:
    """The expert's LoRA file: what a ComfyUI user loads."""
    return OutputLayout.of(project).lora(expert)
