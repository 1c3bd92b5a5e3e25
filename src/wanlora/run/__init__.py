"""The run layer: assembles a training run on top of the engine (train) and rendering (sampling).

- training: `run_training`, what `wanlora train` does (lock, checks, one process or workers);
  `describe_lora`
- experts: one expert end to end (`run_expert`: start point, data, callbacks, the loop) and
  the experts in turn (`train_project`)
- checks: the dataset lints clean and the model files are sound, before any model loads
- callbacks: what the run passes into the loop (loss log, epoch-end samples, step lines)
- jobs: which processes train what on which device (`plan_jobs`)
- workers, pipes: worker processes, their pipes to the parent, failures shared
- launch: `torchrun ... -m wanlora.run.launch DIR`
- lock: one writer per project (`wanlora train`, `wanlora cache`)

The engine never imports this package; this package builds the engine's strategy
(wanlora.train.strategy) and callbacks and calls wanlora.train.loop.train_expert.
"""
