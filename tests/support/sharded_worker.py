"""Runs `generate` on a `data:N` mesh of N simulated CPU devices and prints one JSON line: per
run, the completions, the slot count of every decode call and whether its cache was split over all
N devices, the compactions (slots before and after), and the sharding warnings about batch axes.

  python -m tests.support.sharded_worker N MODEL_DIR RUNS_JSON

RUNS_JSON: a list of {"prompts": [...], "kwargs": {...}} (generate's keyword arguments). The device
count must be set before jax is imported, hence a process per N.
"""

import json
import os
import sys


def main() -> None:
  devices, model_dir, runs = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax

  from rzero_jax import sharding
  from rzero_jax.models import functional, load_pretrained
  from rzero_jax.sampling import generate
  from rzero_jax.sampling import sampler

  assert jax.device_count() == devices
  cfg, params = load_pretrained(model_dir, dtype="float32")
  mesh = sharding.make_mesh(f"data:{devices}")
  plan = sharding.make_plan(mesh, "dp")
  placed = functional.shard_params(cfg, params, plan)

  def split(state) -> bool:
    """The cache's slot axis is split over all devices: each holds slots / N of them."""
    cache = state.cache["k"][0]
    return cache.sharding.shard_shape(cache.shape)[0] * devices == cache.shape[0]

  record = {}
  decode, compact = sampler._decode, sampler._compact

  def recording_decode(params, state, *args, **kwargs):
    record["decodes"].append([int(state.row.shape[0]), split(state)])
    return decode(params, state, *args, **kwargs)

  def recording_compact(state, keep, **kwargs):
    out = compact(state, keep, **kwargs)
    record["compactions"].append([int(state.row.shape[0]), int(out.row.shape[0]), split(out)])
    return out

  sampler._decode, sampler._compact = recording_decode, recording_compact
  results = []
  for run in runs:
    record.update(decodes=[], compactions=[])
    out = generate(cfg, placed, run["prompts"], plan=plan, **run["kwargs"])
    results.append(dict(record, tokens=out.tokens, logprobs=out.logprobs))
  batch_warnings = [repr(key) for key in sharding._warned if key[2] in ("data", "fsdp")]
  print(json.dumps(dict(runs=results, batch_warnings=batch_warnings)))


if __name__ == "__main__":
  main()
