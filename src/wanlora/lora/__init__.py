"""LoRA on the Wan DiT, below both training and sampling (both import it, it imports neither).

- keys: which linears get a LoRA, and how the saved keys are named (`lora_unet_blocks_N_...`)
- inject: peft LoRA layers on a DiT; their weights to and from the saved key format; strength
- file: the saved .safetensors file (tensors + the reference's metadata), rank/alpha of a file
"""
