"""A rich progress bar per expert: step, smoothed loss, lr, s/step, ETA."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..train.callbacks import StepReport


class TrainingProgress:
    """Receives the loop's StepReports and draws one bar per expert."""

    def __init__(self, console, smoothing: float = 0.9):
        self.progress = Progress(
            TextColumn("[bold]{task.fields[expert]:>5}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[sps]:.2f} s/step"
            ),
            TimeRemainingColumn(),
            console=console,
        )
        self.smoothing = smoothing
        self.tasks: dict[str, int] = {}
        self.smoothed: dict[str, float] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, report: StepReport) -> None:
        if report.expert not in self.tasks:
            self.tasks[report.expert] = self.progress.add_task(
                "",
                total=report.total_steps,
                completed=report.step - 1,
                expert=report.expert,
                loss=0.0,
                lr=0.0,
                sps=0.0,
            )
            self.smoothed[report.expert] = report.loss
        s = self.smoothing * self.smoothed[report.expert] + (1 - self.smoothing) * report.loss
        self.smoothed[report.expert] = s
        self.progress.update(
            self.tasks[report.expert],
            completed=report.step,
            loss=s,
            lr=report.lr,
            sps=report.seconds,
        )
