"""Paper-scale Absolute Zero (spec/azr.md defaults) for one base checkpoint on a local path.

  python -m rzero_jax.main --config=experiments/azr.py:qwen2_5_7b_coder \
      --config.model_path=/ckpt/Qwen2.5-Coder-7B --workdir=/runs/azr_coder_7b

Args: qwen2_5_7b_coder (default), qwen2_5_3b_coder, qwen2_5_7b (sets the strategy and a default
path). 64 prompts per (task type, role) per step = 384 sequences, one update per step with TRR++
advantages, AdamW lr 1e-6, no KL, K = 6 references, n = 8 learnability rollouts, 10 induction
inputs, buffers capped at 16384 and seeded to 256 tasks each, 500 steps.
"""

from rzero_jax.azr.config import default_config

MODELS = {
    # name: (default local path, strategy). 3B fits fsdp alone; 7B adds tensor parallelism.
    "qwen2_5_7b_coder": ("checkpoints/Qwen2.5-Coder-7B", "fsdp_tp"),
    "qwen2_5_3b_coder": ("checkpoints/Qwen2.5-Coder-3B", "fsdp"),
    "qwen2_5_7b": ("checkpoints/Qwen2.5-7B", "fsdp_tp"),
}


def get_config(arg: str = "qwen2_5_7b_coder"):
  if arg not in MODELS:
    raise ValueError(f"Unknown model {arg!r} for experiments/azr.py: choose from {sorted(MODELS)}.")
  path, strategy = MODELS[arg]
  config = default_config()
  config.model_path = path
  config.actor.strategy = strategy
  return config
