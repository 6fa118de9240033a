"""The stages of one training step, in the order `ccapo_trainer.loop.train_step` runs them.

1. `collect`   draw prompts, sample G completions each, reward them; with dynamic sampling, drop
               groups without a learning signal and draw more
2. `batch`     pad the kept groups into one batch and compute their advantages
3. `weighting` counterfactual token weights for the batch (the run's `WeightProvider`)
4. `update`    the micro-batched loss, backward and optimizer step(s)
5. `evaluate`  held-out greedy accuracy, every `eval_every` steps

Every stage takes the run's `Components` (built once by `ccapo_trainer.components`).
"""
