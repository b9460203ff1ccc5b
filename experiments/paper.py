"""Paper-scale R-Zero (spec/rzero.md defaults) for one base checkpoint on a local path.

  python -m rzero_jax.main --config=experiments/paper.py:qwen3_4b \
      --config.model_path=/ckpt/Qwen3-4B-Base --workdir=/runs/rzero_qwen3_4b

Args: qwen3_4b, qwen3_8b, octothinker_3b, octothinker_8b (sets the strategy and a default path).
"""

from rzero_jax.rzero.config import default_config

MODELS = {
    # name: (default local path, strategy). 4B fits fsdp alone; 8B adds tensor parallelism.
    "qwen3_4b": ("checkpoints/Qwen3-4B-Base", "fsdp"),
    "qwen3_8b": ("checkpoints/Qwen3-8B-Base", "fsdp_tp"),
    "octothinker_3b": ("checkpoints/OctoThinker-3B-Hybrid-Base", "fsdp"),
    "octothinker_8b": ("checkpoints/OctoThinker-8B-Hybrid-Base", "fsdp_tp"),
}


def get_config(arg: str = "qwen3_4b"):
  if arg not in MODELS:
    raise ValueError(
        f"Unknown model {arg!r} for experiments/paper.py: choose from {sorted(MODELS)}."
    )
  path, strategy = MODELS[arg]
  config = default_config()
  config.model_path = path
  config.challenger.strategy = config.solver.strategy = strategy
  return config
