"""Bytes per device of weights, optimizer state and KV cache under each sharding strategy, and of
a whole R-Zero run (two roles + the KL reference) with full fine-tuning next to LoRA.

  python -m rzero_jax.bench.memory_table [--batch=64 --length=6144 --lora_rank=64]

Computed from the same layout code that places real arrays (`sharding.logical_to_spec`), on mesh
shapes alone, so any device count can be tabulated without the devices. Prints markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from typing import Callable, Sequence

import jax

from rzero_jax import sharding
from rzero_jax.models.config import ModelConfig
from rzero_jax.models import functional
from rzero_jax.models.functional import CACHE_AXES, param_axes, param_shapes, split_lora

GIB = 1024**3

QWEN3_4B = ModelConfig(
    model_type="qwen3",
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_layers=36,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    qk_norm=True,
    tie_embeddings=True,
)
MODELS = {
    "Qwen3-4B": QWEN3_4B,
    "Qwen3-8B": dataclasses.replace(
        QWEN3_4B, hidden_size=4096, intermediate_size=12288, tie_embeddings=False
    ),
}

# (devices, strategy, mesh spec) rows of the table.
LAYOUTS = (
    (8, "dp", "data:8"),
    (8, "fsdp", "fsdp:8"),
    (8, "tp", "tensor:8"),
    (8, "fsdp_tp", "fsdp:4,tensor:2"),
    (16, "dp", "data:16"),
    (16, "fsdp", "fsdp:16"),
    (16, "tp", "data:2,tensor:8"),
    (16, "fsdp_tp", "fsdp:8,tensor:2"),
    (16, "tp", "tensor:16"),
)

# The R-Zero table adds one device (a single 16 GiB Colab TPU chip or one GPU).
RZERO_LAYOUTS = ((1, "dp", "data:1"),) + LAYOUTS


@dataclasses.dataclass(frozen=True)
class DeviceBytes:
  """Bytes on the most loaded device: weights at `param_bytes` per element, AdamW moments (2 x f32),
  f32 (master) weights, and a KV cache (k and v)."""

  weights: int
  adam: int
  master: int
  kv_cache: int


def shard_elements(
    shape: Sequence[int], spec: jax.sharding.PartitionSpec, sizes: dict[str, int]
) -> int:
  """Elements of the largest shard of an array of `shape` laid out as `spec`."""
  out = 1
  for i, dim in enumerate(shape):
    entry = spec[i] if i < len(spec) else None
    axes = () if entry is None else (entry,) if isinstance(entry, str) else entry
    out *= -(-dim // math.prod(sizes[a] for a in axes))
  return out


def _elements(cfg: ModelConfig, rules, sizes: dict[str, int]) -> tuple[int, int]:
  """(base elements, LoRA adapter elements) on the most loaded device."""
  is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, str) for a in x)  # noqa: E731
  counts = jax.tree.map(
      lambda axes, shape: shard_elements(
          shape, sharding.logical_to_spec(axes, rules, sizes, shape, weight=True), sizes
      ),
      param_axes(cfg),
      param_shapes(cfg),
      is_leaf=is_axes,
  )
  base, adapters = split_lora(counts)
  return sum(jax.tree.leaves(base)), sum(jax.tree.leaves(adapters))


def device_bytes(
    cfg: ModelConfig,
    strategy: str,
    sizes: dict[str, int],
    *,
    batch: int,
    length: int,
    param_bytes: int = 2,
    cache_bytes: int = 2,
) -> DeviceBytes:
  """Per-device bytes of `cfg` under `strategy` on a mesh with axis `sizes`."""
  rules = sharding.get_rules(strategy)
  elements, _ = _elements(cfg, rules, sizes)
  cache_shape = functional.cache_shape(cfg, batch, length)
  cache = shard_elements(
      cache_shape, sharding.logical_to_spec(CACHE_AXES, rules, sizes, cache_shape), sizes
  )
  return DeviceBytes(
      weights=elements * param_bytes,
      adam=elements * 8,
      master=elements * 4,
      kv_cache=2 * cache * cache_bytes,
  )


def _markdown(columns: list[str], layouts, cells: Callable[[ModelConfig, str, dict], list]) -> str:
  """A markdown table, a row per model of MODELS and layout of `layouts`: its `columns` are the
  bytes `cells(cfg, strategy, mesh sizes)` returns, in GiB."""
  lines = [
      "| " + " | ".join(["Model", "Devices", "Strategy", "Mesh", *columns]) + " |",
      "|---" * (4 + len(columns)) + "|",
  ]
  for name, cfg in MODELS.items():
    for devices, strategy, spec in layouts:
      gib = [
          f"{n / GIB:.2f}" for n in cells(cfg, strategy, sharding.parse_mesh_spec(spec, devices))
      ]
      lines.append(f"| {name} | {devices} | `{strategy}` | `{spec}` | " + " | ".join(gib) + " |")
  return "\n".join(lines)


def table(batch: int, length: int) -> str:
  """The markdown table for MODELS x LAYOUTS."""

  def cells(cfg, strategy, sizes):
    b = device_bytes(cfg, strategy, sizes, batch=batch, length=length)
    return [b.weights, b.master, b.adam, b.kv_cache, b.master + b.adam, b.weights + b.kv_cache]

  columns = [
      "bf16 weights",
      "f32 weights",
      "AdamW m+v (f32)",
      f"KV cache {batch}x{length} (bf16)",
      "Train state (f32 w + m + v)",
      "Sampler (bf16 w + KV)",
  ]
  return _markdown(columns, LAYOUTS, cells)


def rzero_bytes(cfg: ModelConfig, strategy: str, sizes: dict[str, int], *, lora_rank: int) -> dict:
  """Per-device bytes of an R-Zero run's trained state: two roles and the KL reference.

  Full fine-tuning (lora_rank 0): each role f32 weights + AdamW m, v, and its bf16 sampler copy
  (`sampler`, in the same layout; `config.<role>.sampler_strategy` may pick another); the
  reference an f32 copy. LoRA: one frozen bf16 base shared by both roles, which the sampler reads
  as it is; each role f32 adapters + m, v; the reference the phase-start adapters (f32). The
  sampler's KV cache comes on top (see `table`)."""
  rules = sharding.get_rules(strategy)
  base, _ = _elements(cfg, rules, sizes)
  if not lora_rank:
    per_role = base * (4 + 8)
    return {
        "base": 0,
        "roles": 2 * per_role,
        "sampler": 2 * base * 2,
        "reference": base * 4,
        "total": 2 * per_role + 2 * base * 2 + base * 4,
    }
  _, adapters = _elements(dataclasses.replace(cfg, lora_rank=lora_rank), rules, sizes)
  per_role = adapters * (4 + 8)
  return {
      "base": base * 2,
      "roles": 2 * per_role,
      "sampler": 0,
      "reference": adapters * 4,
      "total": base * 2 + 2 * per_role + adapters * 4,
  }


def rzero_table(lora_rank: int) -> str:
  """Markdown: an R-Zero run's trained state per device, full fine-tuning next to LoRA."""

  def cells(cfg, strategy, sizes):
    return [rzero_bytes(cfg, strategy, sizes, lora_rank=r)["total"] for r in (0, lora_rank)]

  columns = [
      "Full FT: 2 x (f32 w + m + v + bf16 sampler copy) + f32 ref",
      f"LoRA r={lora_rank}: bf16 base + 2 x (f32 adapters + m + v) + ref adapters",
  ]
  return _markdown(columns, RZERO_LAYOUTS, cells)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64, help="KV cache rows")
  parser.add_argument(
      "--length", type=int, default=6144, help="KV cache length (prompt + completion)"
  )
  parser.add_argument("--lora_rank", type=int, default=64, help="LoRA rank of the R-Zero table")
  args = parser.parse_args()
  logging.getLogger("rzero_jax.sharding").setLevel(logging.ERROR)  # fallbacks show in the numbers
  for name, cfg in MODELS.items():
    print(f"{name}: {cfg.num_params() / 1e9:.2f}B parameters")
  print()
  print(
      f"GiB per device (most loaded device), KV cache for {args.batch} sequences x {args.length} tokens:"
  )
  print()
  print(table(args.batch, args.length))
  print()
  print(
      "GiB per device of an R-Zero run's trained state (both roles + KL reference), full "
      "fine-tuning vs LoRA on every projection (+ the sampler's KV cache above):"
  )
  print()
  print(rzero_table(args.lora_rank))


if __name__ == "__main__":
  main()
