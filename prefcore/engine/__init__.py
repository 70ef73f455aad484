"""The training engine: models, batching, log-probs through prefcore.kernels, the loop, checkpoints."""
