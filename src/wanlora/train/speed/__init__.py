"""Training speed, one technique per module; the defaults keep the recipe's numerics.

Chosen by `training.speed`, `training.compile`, `training.checkpointing`,
`training.fp8_storage`, `training.text_fold`, `training.cuda_graph` and the memory budget (recipes/schema.py):

- memory_plan: the memory model and `plan_speed` (storage, recompute count, compile)
- token_memory: what per-token timesteps (TI2V-5B) and latent channels other than 16 / 16 add
- fp8_linear: fp8 weight storage (exact) and the opt-in fp8 products (`speed = "fast"`)
- checkpointing: which blocks recompute in backward
- compile: compiled transformer blocks
- lora_input: LoRA inputs without peft's float32 copies
- text_fold: the caption's padding rows folded into a few cross-attention keys (exact maths)
- cuda_graph: the whole optimiser step replayed from a CUDA graph
- prepare: `prepare_base` / `prepare_for_speed`, the calls the training setup makes
"""
