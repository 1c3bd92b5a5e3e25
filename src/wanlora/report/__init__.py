"""The run's report: output/report.html, one self-contained page about a training run.

It sits above train and sampling (it reads their outputs and draws the recipe's timestep
distribution with train's own sampler) and is split by job:

- `data`: read the project's files into plain dataclasses (recipe, dataset rows,
  TensorBoard scalars, sample files, timings and memory)
- `figures`: every picture as a data: URI (thumbnails, samples, matplotlib plots)
- `render`: the view objects, the Jinja2 environment (autoescape on), and `build_report`,
  which renders templates/report.html.j2 and writes the page atomically

Sections: the recipe and the project's overrides, the dataset (thumbnails and captions),
loss per expert (raw and smoothed) and learning rate, the timestep distribution each expert
trains on, the samples (with/without LoRA grids, standalone samples, samples during
training), and timings and peak memory where recorded.
"""

from .data import Series, read_scalars, smooth
from .render import build_report

__all__ = ["Series", "build_report", "read_scalars", "smooth"]
