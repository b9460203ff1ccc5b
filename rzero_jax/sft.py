"""Supervised fine-tuning of a HF checkpoint on (prompt, response) pairs, e.g. after self-play:

  python -m rzero_jax.sft --model=runs/demo/export/iter_3/solver --data=train.jsonl --out=runs/sft \
      [--steps=N | --epochs=E] [--lr=1e-5] [--batch_size=8] [--micro_batch_size=M] \
      [--mesh=data:-1] [--strategy=fsdp] [--max_len=1024]

Each line of the data file is a JSON object with `response` (the target completion) and either
`question` (rendered with the Solver prompt and the model's chat template, as in the R-Zero loop)
or `prompt` (text used as it is). The loss covers the response tokens and the end-of-turn token
only. `--micro_batch_size` rows of each batch are processed at a time, gradients accumulated
exactly (the same update as the whole batch at once, up to float rounding), to bound activation
memory; the cross-entropy never holds [batch, length, vocab] float32 logits either (see
`rzero_jax.training.sft`). The run uses the loops' models, sharding, train state (AdamW, float32
master weights) and orbax checkpoints: rerunning the same command resumes, and the data order
depends only on (seed, epoch), so a resumed run ends with exactly the weights of an uninterrupted
one. At the end it writes `OUT/export` (a HF checkpoint with the tokenizer) and `OUT/summary.json`.
A bad flag or data file stops with one line naming the problem, exit code 2, and nothing written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Sequence

from absl import app, flags
import numpy as np

from rzero_jax import cli

_MODEL = flags.DEFINE_string("model", None, "HF checkpoint directory to fine-tune.")
_DATA = flags.DEFINE_string("data", None, "jsonl file: {question | prompt, response} per line.")
_OUT = flags.DEFINE_string("out", None, "Run directory (checkpoints, export, summary.json).")
_STEPS = flags.DEFINE_integer("steps", None, "Optimizer steps (exclusive with --epochs).")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Passes over the data (default 1).")
_LR = flags.DEFINE_float("lr", 1e-5, "Peak learning rate (AdamW, linear warmup, then constant).")
_WARMUP = flags.DEFINE_integer("warmup_steps", 0, "Linear warmup steps.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 0.0, "AdamW weight decay.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Sequences per optimizer step.")
_MICRO_BATCH = flags.DEFINE_integer(
    "micro_batch_size",
    None,
    "Sequences per micro-batch: a step accumulates gradients over --batch_size / this many "
    "micro-batches (must divide --batch_size; the update is the same, activation memory smaller). "
    "Default: the whole batch at once.",
)
_MAX_LEN = flags.DEFINE_integer("max_len", 1024, "Longest prompt + response in tokens.")
_MESH = flags.DEFINE_string("mesh", "data:-1", "Device mesh, e.g. 'fsdp:8' or 'data:2,fsdp:4'.")
_STRATEGY = flags.DEFINE_string("strategy", "fsdp", "Sharding strategy (dp, fsdp, tp, fsdp_tp).")
_LORA_RANK = flags.DEFINE_integer("lora_rank", 0, "LoRA rank (0 = full fine-tuning).")
_LORA_ALPHA = flags.DEFINE_float("lora_alpha", 16.0, "LoRA scale numerator (scale alpha / rank).")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Compute dtype (master weights stay float32).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the data order.")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints.")

LENGTH_BUCKET = 16


class DataError(ValueError):
  """A problem with the data file, reported as one line."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One tokenized training pair."""

  prompt: list[int]
  response: list[int]


def read_examples(path: str, tokenizer: Any, max_len: int) -> list[Example]:
  """Reads and tokenizes every line of `path`; raises `DataError` naming the first bad line."""
  from rzero_jax.models.tokenizer import encode_chat, end_of_turn_id
  from rzero_jax.rzero import prompts

  if not os.path.isfile(path):
    raise DataError(f"--data file {path!r} does not exist.")
  end = end_of_turn_id(tokenizer)
  examples = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{number}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{where} is not valid JSON ({e.msg}).") from None
      if not isinstance(record, dict) or not isinstance(record.get("response"), str):
        raise DataError(f"{where} needs a string field 'response'.")
      has_question, has_prompt = (isinstance(record.get(k), str) for k in ("question", "prompt"))
      if has_question == has_prompt:
        raise DataError(f"{where} needs exactly one of the string fields 'question' or 'prompt'.")
      if has_question:
        prompt = encode_chat(tokenizer, prompts.solver_messages(record["question"]))
      else:
        prompt = tokenizer.encode(record["prompt"], add_special_tokens=False)
      response = tokenizer.encode(record["response"], add_special_tokens=False) + [end]
      if not prompt:
        raise DataError(f"{where} has an empty prompt.")
      if len(prompt) + len(response) > max_len:
        raise DataError(
            f"{where} has {len(prompt) + len(response)} tokens (prompt + response), "
            f"more than --max_len={max_len}: raise --max_len or shorten it."
        )
      examples.append(Example(prompt, response))
  if not examples:
    raise DataError(f"--data file {path!r} holds no examples.")
  return examples


def batch_order(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Example indices of optimizer step `step`: epochs are seeded permutations, concatenated and
  cut into consecutive batches (a batch may span two epochs). Depends only on its arguments."""
  start = step * batch_size
  epochs = range(start // num_examples, (start + batch_size - 1) // num_examples + 1)
  order = np.concatenate(
      [np.random.default_rng([seed, e]).permutation(num_examples) for e in epochs]
  )
  offset = start - epochs[0] * num_examples
  return order[offset : offset + batch_size]


def padded_length(examples: Sequence[Example], max_len: int) -> int:
  """One batch length for the whole run (compiles once): the longest row, rounded up."""
  longest = max(len(e.prompt) + len(e.response) for e in examples)
  return min(max_len, -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET)


def total_steps(num_examples: int, batch_size: int, steps: int | None, epochs: int | None) -> int:
  if steps is not None:
    return steps
  return -(-num_examples * (epochs or 1) // batch_size)


def _validate_flags() -> None:
  problems = []
  for name, flag in (("model", _MODEL), ("data", _DATA), ("out", _OUT)):
    if not flag.value:
      problems.append(f"--{name} is required")
  if _STEPS.value is not None and _EPOCHS.value is not None:
    problems.append("give --steps or --epochs, not both")
  for name, flag in (
      ("steps", _STEPS),
      ("epochs", _EPOCHS),
      ("batch_size", _BATCH),
      ("micro_batch_size", _MICRO_BATCH),
      ("max_len", _MAX_LEN),
      ("checkpoint_every", _CKPT_EVERY),
  ):
    if flag.value is not None and flag.value < 1:
      problems.append(f"--{name} must be >= 1, got {flag.value}")
  micro = _MICRO_BATCH.value
  if micro is not None and micro >= 1 and _BATCH.value >= 1 and _BATCH.value % micro:
    problems.append(f"--micro_batch_size={micro} must divide --batch_size={_BATCH.value}")
  if _LR.value <= 0:
    problems.append(f"--lr must be > 0, got {_LR.value}")
  if _LORA_RANK.value < 0:
    problems.append(f"--lora_rank must be >= 0, got {_LORA_RANK.value}")
  if _MODEL.value and not os.path.isdir(_MODEL.value):
    problems.append(f"--model directory {_MODEL.value!r} does not exist")
  if problems:
    raise DataError("; ".join(problems) + ".")


def run(out: str) -> dict:
  """Fine-tunes (or resumes) into `out`; returns the summary written to summary.json."""
  import jax
  from jax.experimental import multihost_utils

  from rzero_jax import multihost, sharding
  from rzero_jax.checkpoint import RunCheckpointer
  from rzero_jax.io import atomic_json
  from rzero_jax.metrics import MetricWriter, Progress
  from rzero_jax.selfplay.runner import TOKENIZER_FILES
  from rzero_jax.models import combine_params, init_lora, load_pretrained, load_tokenizer
  from rzero_jax.models import save_pretrained
  from rzero_jax.training import TrainConfig, init_train_state
  from rzero_jax.training.sft import make_sft_batch, make_sft_step

  t_start = time.perf_counter()
  main_process = multihost.is_main_process()
  # 1. Data, flags and mesh are checked before anything is written.
  tokenizer = load_tokenizer(_MODEL.value)
  examples = read_examples(_DATA.value, tokenizer, _MAX_LEN.value)
  mesh = sharding.make_mesh(_MESH.value)
  plan = sharding.make_plan(mesh, _STRATEGY.value)
  steps = total_steps(len(examples), _BATCH.value, _STEPS.value, _EPOCHS.value)
  length = padded_length(examples, _MAX_LEN.value)
  multihost.process_rows(plan, _BATCH.value)  # the batch must split over the mesh

  # 2. Model, train state and checkpoints.
  cfg, params = load_pretrained(_MODEL.value, dtype="float32", plan=plan)
  cfg = dataclasses.replace(cfg, dtype=_DTYPE.value)
  train_cfg = TrainConfig(
      learning_rate=_LR.value,
      warmup_steps=_WARMUP.value,
      weight_decay=_WEIGHT_DECAY.value,
      kl_coef=0.0,
      micro_batch_size=_MICRO_BATCH.value,
  )
  # Full fine-tuning: the state takes over the loaded weights. LoRA: the loaded weights stay a
  # frozen base and the state holds fresh adapters (targets: every projection).
  base, trained = None, params
  if _LORA_RANK.value:
    cfg = dataclasses.replace(cfg, lora_rank=_LORA_RANK.value, lora_alpha=_LORA_ALPHA.value)
    base, trained = params, init_lora(cfg, jax.random.key(_SEED.value))
  state = init_train_state(cfg, train_cfg, trained, plan, donate=base is None)
  del params, trained
  train_step = make_sft_step(cfg, train_cfg, plan)
  os.makedirs(out, exist_ok=True)
  ckpt = RunCheckpointer(os.path.join(out, "checkpoints"), ("state",))
  meta = {"step": 0, "losses": []}
  if ckpt.latest_step() is not None:
    trees, meta = ckpt.restore(ckpt.latest_step(), {"state": state})
    state = trees["state"]
    if main_process:
      print(f"resuming from checkpoint at step {meta['step']}/{steps}", flush=True)
  writer = MetricWriter(os.path.join(out, "tb"), enabled=main_process)

  # 3. Training: each process feeds its rows of every batch.
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  rows = multihost.process_rows(plan, _BATCH.value)
  progress = Progress("sft step", steps, start=meta["step"], enabled=main_process)
  while meta["step"] < steps:
    chosen = [
        examples[i] for i in batch_order(len(examples), _BATCH.value, _SEED.value, meta["step"])
    ]
    batch = make_sft_batch([e.prompt for e in chosen], [e.response for e in chosen], length, pad)
    batch = multihost.host_to_global({k: v[rows] for k, v in batch.items()}, plan)
    state, metrics = train_step(state, batch, base)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    meta["step"] += 1
    meta["losses"].append(metrics["loss"])
    writer.scalars(meta["step"], {f"sft/{k}": v for k, v in metrics.items()})
    progress.update(loss=metrics["loss"], token_acc=metrics["accuracy"])
    if meta["step"] % _CKPT_EVERY.value == 0 or meta["step"] == steps:
      ckpt.save(meta["step"], {"state": state}, meta)
  writer.close()
  ckpt.close()

  # 4. Export (adapters merged when LoRA is on) and summary, by process 0.
  host_params = jax.tree.map(
      lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)),
      combine_params(base, state.params),
  )
  summary = {
      "steps": steps,
      "examples": len(examples),
      "epochs": steps * _BATCH.value / len(examples),
      "final_loss": meta["losses"][-1] if meta["losses"] else None,
      "losses": meta["losses"],
      "flags": {
          f: flags.FLAGS[f].value
          for f in (
              "model",
              "data",
              "lr",
              "batch_size",
              "micro_batch_size",
              "max_len",
              "seed",
              "mesh",
              "strategy",
              "lora_rank",
              "lora_alpha",
              "dtype",
              "warmup_steps",
              "weight_decay",
          )
      },
      "timing": {"total_s": time.perf_counter() - t_start},
  }
  if main_process:
    files = {
        f: os.path.join(_MODEL.value, f)
        for f in TOKENIZER_FILES
        if os.path.exists(os.path.join(_MODEL.value, f))
    }
    save_pretrained(
        dataclasses.replace(cfg, dtype="float32"),
        host_params,
        os.path.join(out, "export"),
        extra_files=files,
    )
    atomic_json(os.path.join(out, "summary.json"), summary, natural_order=True)
    print(
        f"done: {steps} steps, final loss {summary['final_loss']:.4f}; HF export in "
        f"{os.path.join(out, 'export')}",
        flush=True,
    )
  return summary


def main(argv: list[str]) -> None:
  cli.start(argv)
  from rzero_jax import multihost

  created = not os.path.exists(_OUT.value or "")
  try:
    _validate_flags()
    multihost.initialize_distributed()
    run(os.path.abspath(_OUT.value))
  except (DataError, ValueError, OSError) as e:
    if (
        created
        and _OUT.value
        and os.path.isdir(_OUT.value)
        and not os.path.exists(os.path.join(_OUT.value, "checkpoints"))
    ):
      shutil.rmtree(_OUT.value, ignore_errors=True)
    cli.fail(e)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
