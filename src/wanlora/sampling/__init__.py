"""Rendering: two-expert inference with LoRAs (beside train: neither imports the other).

- pipeline: two-expert Wan inference through diffusers' WanPipeline on our models
  (boundary switch, UniPC flow scheduler with the recipe's shift, expert residency/offload)
- sample: `wanlora sample` (prompts -> PNGs, or clips, under output/samples/, --compare grids)
- settings: guidance per expert (the task's official pair), frames 4n+1, fps per task
- files: the sample files (PNG with its settings, .mp4 beside it, versioned names)
- video_file: H.264 .mp4 encoding and decoding (PyAV)
- epoch_samples: the on_epoch_end callback the run layer passes to training (samples
  during training, memory numbers)
"""
