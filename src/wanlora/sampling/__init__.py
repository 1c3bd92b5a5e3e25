"""Sampling: rendering with the trained LoRAs, beside training (neither imports the other).

- pipeline: two-expert Wan inference through diffusers' WanPipeline on our models
  (boundary switch, UniPC flow scheduler with the recipe's shift, expert residency/offload)
- sample: `wanlora sample` (prompts -> PNGs under output/samples/, --compare grids)
- training: the on_epoch_end callback (samples during training, memory numbers)
"""
