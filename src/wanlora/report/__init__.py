"""The run's report: output/report.html, one self-contained page about a training run.

It sits above train and sampling (it reads their outputs and draws the recipe's timestep
distribution with train's own sampler) and is split by job:

- `data`: read the project's files into plain dataclasses (recipe, dataset rows,
  TensorBoard scalars, sample files, timings and memory); `grids` shapes the samples during
  training into one grid per prompt, `validation` reads the validation log and the verdict
- `media`: the grid's stills and videos as data URIs within a size budget
- `figures`: every picture as a data: URI (thumbnails, samples, matplotlib plots)
- `render`: the view objects, the Jinja2 environment (autoescape on), and `build_report`,
  which renders templates/report.html.j2 and writes the page atomically

Sections: the verdict (when training's validation wrote one), the recipe and the
project's overrides, the dataset (thumbnails and captions), loss per expert (raw and
smoothed) with the validation loss and LoRA effect, the learning rate, the timestep
distribution each expert trains on, the samples (with/without LoRA grids, standalone
samples and clips, and the grid of the samples during training: base row, epochs x
strengths, videos inline), and timings (training, sampling and validation apart) and peak
memory where recorded.
"""

from .data import Series, read_scalars, smooth
from .render import build_report

__all__ = ["Series", "build_report", "read_scalars", "smooth"]
