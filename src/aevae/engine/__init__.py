"""The training engine: K steps per `training_step` (chunked), CUDA-graph steps (graphs), the
NaN guard, checkpointing, distributed launch, stop signals, and the one module that reaches
into Lightning's, TensorBoard's and Hydra's private state (internals)."""
