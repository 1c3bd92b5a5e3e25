"""The doctor's report: one line per check, a verdict, the rules' constants."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

GB = 1000**3
TRUNCATED_RATIO = 0.9
CPU_MAX_DIT_BYTES = 1 * GB
ESTIMATE_HEADROOM = 1.15
PROJECT_DISK_PER_EXPERT = 3 * GB  # text/latent caches + LoRA (~150 MB) + resume state (~1 GB)
LIBRARIES = ("torch", "diffusers", "transformers", "peft", "accelerate", "huggingface-hub")
DIST_NAME = "wan22-loratrain"

Status = Literal["ok", "warn", "FAIL"]
# what `run_doctor(None)` cannot judge: everything that depends on a project's config
NOT_CHECKED = "model files, the GPU memory the run needs, the speed plan, disk space"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    project: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "FAIL" for c in self.checks)

    @property
    def verdict(self) -> str:
        """The one sentence under the table: can a run start, and what was not checked."""
        if not self.ok:
            verdict = "A training run cannot start yet: fix the FAIL lines above."
        elif self.project is None:
            verdict = "This machine can train."
        else:
            return "A training run can start."
        if self.project is None:
            verdict += (
                f" Not checked without a project: {NOT_CHECKED} "
                "(run `wanlora doctor DIR` with your project folder)."
            )
        return verdict

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix))

    def to_dict(self) -> dict:
        return {
            "project": self.project,
            "ok": self.ok,
            "verdict": self.verdict,
            "checks": [asdict(c) for c in self.checks],
        }
