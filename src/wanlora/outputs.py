"""Where a project's outputs go: the one place that names LoRA, state, sample, log and
report paths. train, sampling, report and the run layer all read it; none of them spells a
path under output/ by itself.

    output/
      <LoRA name>.safetensors   one per expert, named as the recipe names them
      state/<expert>/step-N/    resume states (train/state.py)
      samples/                  PNGs, and an .mp4 beside the PNG of its first frame when
                                frames > 1, rendered during and after training:
                                train_<expert>_e<epoch>_p<i>_seed<s>[_s<strength>] and
                                train_base_p<i>_seed<s> (at epoch ends),
                                p<i>_seed<s>_<strengths> / _base, compare_seed<s>_<strengths>
      logs/<expert>/            TensorBoard event files, validation.jsonl (validation points)
      verdict.json              does each LoRA move the model (train/verdict.py)
      report.html               the run's report
      run.json                  what the run was trained from, its status (run/records.py)
      runs/<N>/                 earlier runs, kept: the same names inside (`kept_run(N)`)

output/ holds the current run (the newest); when a new run starts, the run before it moves
into runs/<N>/ whole (run/kept.py): its LoRAs as hard links, so the LoRAs at
output/<LoRA name>.safetensors, the path a ComfyUI user loads, stay in place until the new
run writes its own (a new file renamed over the name: the kept link keeps the old bytes).
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

    @staticmethod
    def training_sample_stem(
        expert: str, epoch: int, prompt_index: int, seed: int, strength: float = 1.0
    ) -> str:
        """A sample rendered at an epoch's end (a name in samples_dir, without `.png`/`.mp4`);
        a LoRA strength other than 1 is in the name (`..._s0.5`)."""
        stem = f"train_{expert}_e{epoch:04d}_p{prompt_index:02d}_seed{seed}"
        return stem if strength == 1.0 else f"{stem}_s{strength:g}"

    @staticmethod
    def training_base_stem(prompt_index: int, seed: int) -> str:
        """The base models' sample (no LoRA) of a prompt, rendered once at the first epoch end."""
        return f"train_base_p{prompt_index:02d}_seed{seed}"

    def sample_file(self, stem: str, suffix: str) -> Path:
        """A sample's file in samples_dir: `stem` + `.png` or `.mp4`."""
        return self.samples_dir / f"{stem}{suffix}"

    @staticmethod
    def sample_stem(prompt_index: int, seed: int, strengths_tag: str) -> str:
        """A `wanlora sample` image: `p00_seed42_high1_low1`, or `..._base` without LoRAs."""
        return f"p{prompt_index:02d}_seed{seed}_{strengths_tag}"

    @staticmethod
    def compare_stem(seeds: list[int], strengths_tag: str) -> str:
        """A `wanlora sample --compare` grid: `compare_seed42_high1_low1` (seeds 1-2-3, 1-9)."""
        seed_part = (
            "-".join(str(x) for x in seeds) if len(seeds) <= 4 else f"{seeds[0]}-{seeds[-1]}"
        )
        return f"compare_seed{seed_part}_{strengths_tag}"

    @property
    def logs_root(self) -> Path:
        return self.root / "logs"

    def logs_dir(self, expert: str) -> Path:
        return self.logs_root / expert

    def validation_log(self, expert: str) -> Path:
        """The expert's validation points, one JSON object a line (run/validation.py)."""
        return self.logs_dir(expert) / "validation.jsonl"

    @property
    def verdict(self) -> Path:
        """The end-of-training verdict per expert (train/verdict.py), for the report."""
        return self.root / "verdict.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def run_record(self) -> Path:
        """The run's record: settings, dataset and model identities, status (run/records.py)."""
        return self.root / "run.json"

    @property
    def runs_root(self) -> Path:
        return self.root / "runs"

    def kept_run(self, number: int) -> OutputLayout:
        """The files of earlier run `number`, under runs/<number>/ with the same names."""
        return OutputLayout(self.runs_root / str(number), self.lora_names)

    def run_files(self) -> list[Path]:
        """What belongs to one run besides its LoRAs (moved whole when a new run starts);
        the record last, so a move cut short is finished by the next one."""
        return [self.state_root, self.samples_dir, self.logs_root, self.report, self.run_record]


def lora_path(project: Project, expert: str) -> Path:
    """The expert's LoRA file: what a ComfyUI user loads."""
    return OutputLayout.of(project).lora(expert)
