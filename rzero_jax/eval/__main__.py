"""CLI: ``python -m rzero_jax.eval --model=DIR --benchmarks=math500,gsm8k --out=DIR``.

Checks every flag and path first (``--out`` must exist or be creatable, and be writable), then
loads every benchmark (a bad flag, path or name, or a missing file: one line, exit 2, nothing
written), and only then the model; generates every item's samples in one continuous-batching
call (``--batch_size`` rows in flight; progress on stderr), prints the table and writes
``results.json`` plus one ``<benchmark>.jsonl`` per benchmark into ``--out`` (process 0 only).
"""

from __future__ import annotations

import os

from absl import app, flags

from rzero_jax import cli

_MODEL = flags.DEFINE_string(
    "model", None, "Local HF checkpoint directory (config.json, " "*.safetensors, tokenizer files)."
)
_BENCHMARKS = flags.DEFINE_list(
    "benchmarks",
    None,
    "Comma-separated benchmark names, e.g. " "math500,gsm8k,aime24 (see docs/evaluation.md).",
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir",
    None,
    "Directory (or single file) with the benchmark "
    "files <name>.jsonl/.json/.parquet; default: the Hugging Face hub.",
)
_LIMIT = flags.DEFINE_integer(
    "limit", None, "Evaluate only the first N items of each benchmark.", lower_bound=1
)
_SAMPLES = flags.DEFINE_integer(
    "samples",
    1,
    "Samples per item: 1 is greedy; k > 1 reports " "avg@k and pass@k at --temperature.",
    lower_bound=1,
)
_TEMPERATURE = flags.DEFINE_float(
    "temperature",
    None,
    "Sampling temperature (default 0 for " "--samples=1, else 0.6).",
    lower_bound=0.0,
)
_TOP_P = flags.DEFINE_float(
    "top_p", 1.0, "Nucleus sampling threshold.", lower_bound=0.0, upper_bound=1.0
)
flags.DEFINE_integer(
    "max_new_tokens",
    4096,
    "Generation budget per response " "(capped by the model's context).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "batch_size",
    64,
    "Rows (item samples) in flight in the one continuous-batching generate call; the scores do "
    "not depend on it.",
    lower_bound=1,
)
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Parameter dtype (bfloat16, float32).")
flags.DEFINE_integer("seed", 0, "Sampling seed.", lower_bound=0)
_MESH = flags.DEFINE_string(
    "mesh",
    None,
    "Device mesh, e.g. 'data:-1' or 'fsdp:4,tensor:2'; " "default: one device, unsharded.",
)
_STRATEGY = flags.DEFINE_string("strategy", None, "Sharding strategy (dp, fsdp, tp, fsdp_tp).")
_OUT = flags.DEFINE_string("out", None, "Output directory (results.json, <benchmark>.jsonl).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host coordinator host:port (GPU/CPU clusters)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (multi-host).", lower_bound=1
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (multi-host).", lower_bound=0
)

# The flags passed on to `evaluate` as the keywords of the same names.
EVALUATE_FLAGS = ("samples", "temperature", "top_p", "max_new_tokens", "batch_size", "seed")


class UsageError(ValueError):
  """A bad flag value (one line, exit 2)."""


def _writes_results() -> bool:
  """False only on a process known not to be process 0, the one that writes ``--out``."""
  index = _PROCESS_ID.value
  if index is None:  # as multihost.initialize_distributed reads it
    index = os.environ.get("RZERO_PROCESS_ID", "").strip() or None
  return index is None or str(index) == "0"


def _check_flags() -> None:
  """Every flag and path, before anything is loaded: values first, then --out, --data_dir, and
  --model last (so a bad value is reported even with a model path that is also wrong)."""
  if not _BENCHMARKS.value:
    raise UsageError("--benchmarks is required, e.g. --benchmarks=math500,gsm8k")
  if not _OUT.value:
    raise UsageError("--out is required: the directory for results.json and <benchmark>.jsonl")
  if not 0 < _TOP_P.value <= 1:
    raise UsageError(f"--top_p must be in (0, 1] (1 disables it), got {_TOP_P.value}")
  if _SAMPLES.value > 1 and _TEMPERATURE.value == 0:
    raise UsageError("--samples > 1 needs --temperature > 0")
  if _DTYPE.value not in ("bfloat16", "float32", "float16"):
    raise UsageError(f"--dtype must be bfloat16, float32 or float16, got {_DTYPE.value!r}")
  if _STRATEGY.value and not _MESH.value:
    raise UsageError("--strategy needs --mesh (without a mesh the model is not sharded)")
  if None not in (_PROCESS_ID.value, _NUM_PROCESSES.value) and (
      _PROCESS_ID.value >= _NUM_PROCESSES.value
  ):
    raise UsageError(
        f"--process_id={_PROCESS_ID.value} is not below --num_processes={_NUM_PROCESSES.value}"
    )
  if _writes_results():
    from rzero_jax.eval.results import check_out_dir

    try:
      check_out_dir(_OUT.value)
    except ValueError as e:
      raise UsageError(f"--out {e}") from None
  if _DATA_DIR.value and not os.path.exists(_DATA_DIR.value):
    raise UsageError(f"--data_dir {_DATA_DIR.value!r} does not exist")
  if not _MODEL.value:
    raise UsageError("--model is required: a local HF checkpoint directory")
  if not os.path.isdir(_MODEL.value):
    raise UsageError(f"--model {_MODEL.value!r} is not a directory")
  if not os.path.isfile(os.path.join(_MODEL.value, "config.json")):
    raise UsageError(f"--model {_MODEL.value!r} has no config.json: not a HF checkpoint directory")


def run() -> dict:
  """Everything after flag parsing; raises ValueError/OSError for the one-line error path."""
  _check_flags()
  from rzero_jax.eval import evaluation, results

  items = evaluation.load_all(_BENCHMARKS.value, _DATA_DIR.value, _LIMIT.value)
  from rzero_jax import multihost, sharding

  multihost.initialize_distributed(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
  )
  # The one sharding plan (None: unsharded); a bad mesh or strategy fails before the model loads.
  plan = (
      sharding.make_plan(sharding.make_mesh(_MESH.value), _STRATEGY.value) if _MESH.value else None
  )
  from rzero_jax.models import load_pretrained, load_tokenizer

  tokenizer = load_tokenizer(_MODEL.value)
  cfg, params = load_pretrained(_MODEL.value, dtype=_DTYPE.value, plan=plan)
  main = multihost.is_main_process()
  settings = {f: flags.FLAGS[f].value for f in EVALUATE_FLAGS}
  result = evaluation.evaluate(
      cfg, params, tokenizer, list(items), items=items, plan=plan, progress=main, **settings
  )
  if main:
    name = os.path.basename(os.path.normpath(_MODEL.value))
    print(results.format_table(result, name), flush=True)
    print(
        f"{sum(len(v) for v in items.values())} items in {result['seconds']:.1f} s "
        f"({result['items_per_s']:.2f} items/s)",
        flush=True,
    )
    results.write_results(
        _OUT.value, result, {"model": os.path.abspath(_MODEL.value), "data_dir": _DATA_DIR.value}
    )
    print(f"wrote {os.path.join(_OUT.value, 'results.json')}", flush=True)
  return result


def main(argv):
  cli.start(argv)
  try:
    run()
  except (ValueError, OSError) as e:
    cli.fail(e)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
