"""Rendering: two-expert inference with LoRAs (beside train: neither imports the other).

- pipeline: two-expert Wan inference through diffusers' WanPipeline on our models
  (boundary switch, UniPC flow scheduler with the recipe's shift, expert residency/offload)
- sample: `wanlora sample` (prompts -> PNGs under output/samples/, --compare grids)
- epoch_samples: the on_epoch_end callback the run layer passes to training (samples
  during training, memory numbers)
"""
