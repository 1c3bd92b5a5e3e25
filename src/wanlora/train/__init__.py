"""The engine: one expert's LoRA from prepared data (the run layer, wanlora.run, prepares it).

- loop: `train_expert`, the recipe top to bottom (set up, the epochs, save)
- setup, step, checkpoint: its named parts (model + optimiser + state; one step; saving)
- strategy, data_parallel: the parallel-strategy interface, one process, N data-parallel ranks
- callbacks, data: what the loop reports and what it is handed
- timesteps, schedule, state: the recipe's timestep draws, lr schedule, resume states
- speed/: one module per speed technique, and the plan that picks them
- failures: training failures as one line each

Imports only layers below it (lora, models, dataset, cache, recipes); never sampling or run.
"""
