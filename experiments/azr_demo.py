"""The embedded Absolute Zero demo: a toy program world built locally (no downloads).

  python -m rzero_jax.main --config=experiments/azr_demo.py --workdir=runs/azr_demo
  python -m rzero_jax.main --config=experiments/azr_demo.py:smoke --workdir=runs/azr_smoke
  python -m rzero_jax.main --config=experiments/azr_demo.py:lora --workdir=runs/azr_lora  # LoRA

The base model (a 0.87M-parameter Qwen3 pretrained on synthetic proposer and solver text by
`experiments/toy_code/build.py`) is committed in experiments/toy_code/base_model and rebuilt (then
cached next to the workdir) when the build settings change. Its world is short Python functions on
ints, strings and lists; one model proposes deduction, abduction and induction tasks, the sandboxed
executor validates them and checks every answer, and the run reports the greedy held-out accuracy
per task type (executor-graded) at the start and at each evaluation point.
"""

from experiments.toy_code import data
from rzero_jax.azr.config import default_config

HELDOUT_PER_TYPE = 40
INDUCTION_INPUTS = 4


def heldout_tasks():
  """Held-out tasks per type, on programs from the held-out partition of the toy world."""
  return data.heldout_tasks(HELDOUT_PER_TYPE, induction_inputs=INDUCTION_INPUTS)


def seed_tasks():
  """The buffers' starting tasks: the toy model never saw the spec's identity seed (`def f(a):
  return a` on "Hello world"), so each buffer starts from four tasks of its own world."""
  return data.seed_tasks(4, induction_inputs=INDUCTION_INPUTS)


def smoke_heldout_tasks():
  return data.heldout_tasks(8, induction_inputs=INDUCTION_INPUTS)


VARIANTS = ("", "smoke", "lora", "lora_smoke")


def get_config(arg: str = ""):
  if arg not in VARIANTS:
    raise ValueError(
        f"Unknown demo variant {arg!r}: use experiments/azr_demo.py or experiments/azr_demo.py:"
        + ", :".join(v for v in VARIANTS if v)
        + "."
    )
  c = default_config()
  c.base_model_builder = "experiments.toy_code.build:ensure_base_model"
  c.dtype = "float32"
  c.mesh = "data:-1"
  c.steps = 20
  c.checkpoint_every_steps = 5
  c.max_sample_batch = 512
  c.actor.update(
      strategy="dp",
      prompts_per_step=32,  # per task type and role: 16 left seed 0 at +2.5 (docs/results)
      updates_per_step=1,
      max_prompt_tokens=96,
      max_new_tokens=128,
  )
  c.actor.train.update(learning_rate=2e-4, micro_batch_size=96)
  c.tasks.update(
      prompts="experiments.toy_code.prompts",
      seed_tasks="experiments.azr_demo:seed_tasks",
      references=2,
      learnability_rollouts=8,
      induction_inputs=INDUCTION_INPUTS,
      buffer_cap=4096,
      seed_buffer_size=32,
      max_seeding_rounds=4,
      timeout_s=2.0,
      executor_workers=2,
  )
  c.eval.update(heldout="experiments.azr_demo:heldout_tasks", every_steps=10, max_new_tokens=128)
  if arg.startswith("lora"):
    # The actor trains rank-16 adapters on every projection over the frozen base, at 10x the
    # full fine-tuning learning rate (as R-Zero's demo.py:lora; not yet measured on this demo).
    c.actor.lora.update(rank=16, alpha=32.0)
    c.actor.train.learning_rate = 2e-3
  if arg.endswith("smoke"):
    c.steps = 2
    c.checkpoint_every_steps = 1
    c.actor.update(prompts_per_step=8)
    c.actor.train.micro_batch_size = 48
    c.tasks.update(seed_buffer_size=8, max_seeding_rounds=1, learnability_rollouts=4)
    c.eval.update(heldout="experiments.azr_demo:smoke_heldout_tasks", every_steps=0)
  return c
