"""Device meshes and sharding strategies (tables from logical axis names to mesh axes)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, Any], ...]

# Each strategy maps the model's logical axes to mesh axes. A logical name may appear several
# times: flax takes the first mesh axis not already used by another dimension of the same array.
STRATEGIES: dict[str, Rules] = {
    "dp": (
        ("batch", ("data", "fsdp")),
    ),
    "fsdp": (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
    ),
    "tp": (
        ("batch", ("data", "fsdp")),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
    ),
    "fsdp_tp": (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
    ),
}


def register_strategy(name: str, rules: Sequence[tuple[str, Any]]) -> None:
  """Adds a named strategy (a table of (logical axis, mesh axis or axes or None) pairs)."""
  STRATEGIES[name] = tuple((str(k), tuple(v) if isinstance(v, list) else v) for k, v in rules)


def get_rules(strategy: str | Sequence[tuple[str, Any]]) -> Rules:
  """Resolves a strategy name (or an explicit rules table) to a rules tuple."""
  if isinstance(strategy, str):
    if strategy not in STRATEGIES:
      raise ValueError(f"Unknown sharding strategy {strategy!r}: choose one of {sorted(STRATEGIES)} "
                       "or register your own with rzero_jax.sharding.register_strategy.")
    return STRATEGIES[strategy]
  return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in strategy)


def make_mesh(spec: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh from a spec like "data:2,fsdp:2,tensor:2"; one size may be -1 (the rest).

  Axes not named get size 1, so every mesh has the axes `data`, `fsdp` and `tensor`.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = {axis: 1 for axis in MESH_AXES}
  named = []
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, sep, value = part.partition(":")
    if not sep or name not in MESH_AXES or name in named:
      raise ValueError(f"Bad mesh spec {spec!r}: write comma-separated `axis:size` pairs with axes "
                       f"from {MESH_AXES}, each at most once (e.g. 'data:2,fsdp:2,tensor:2').")
    try:
      sizes[name] = int(value)
    except ValueError:
      raise ValueError(f"Bad mesh spec {spec!r}: size {value!r} of axis {name!r} is not an integer.")
    named.append(name)
  wildcard = [a for a in MESH_AXES if sizes[a] == -1]
  if len(wildcard) > 1 or any(s == 0 or s < -1 for s in sizes.values()):
    raise ValueError(f"Bad mesh spec {spec!r}: sizes must be positive, with at most one -1.")
  known = math.prod(s for s in sizes.values() if s != -1)
  if wildcard:
    if len(devices) % known:
      raise ValueError(f"Mesh spec {spec!r} cannot fill {len(devices)} devices: {len(devices)} is "
                       f"not a multiple of {known}.")
    sizes[wildcard[0]] = len(devices) // known
  total = math.prod(sizes.values())
  if total != len(devices):
    raise ValueError(
        f"Mesh spec {spec!r} needs {total} devices but {len(devices)} are available: make the sizes "
        f"multiply to {len(devices)} (or use -1 for one axis to take the remaining devices).")
  grid = np.asarray(devices, dtype=object).reshape([sizes[a] for a in MESH_AXES])
  return Mesh(grid, MESH_AXES)


@dataclasses.dataclass(frozen=True)
class ShardingPlan:
  """A mesh plus a strategy's rules: turns logical axis names into shardings. Hashable (jit-static)."""

  mesh: Mesh
  rules: Rules

  def spec(self, logical_axes: Sequence[str | None]) -> PartitionSpec:
    return nn.logical_to_mesh_axes(tuple(logical_axes), self.rules)

  def sharding(self, logical_axes: Sequence[str | None]) -> NamedSharding:
    return NamedSharding(self.mesh, self.spec(logical_axes))

  def constrain(self, x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    return jax.lax.with_sharding_constraint(x, self.sharding(logical_axes))


def make_plan(mesh: Mesh | None, strategy: str | Sequence | None) -> ShardingPlan | None:
  """A `ShardingPlan`, or None when no mesh is given (single-device, unsharded)."""
  if mesh is None:
    return None
  return ShardingPlan(mesh=mesh, rules=get_rules(strategy or "fsdp"))


def constrain(x: jax.Array, logical_axes: Sequence[str | None], plan: ShardingPlan | None) -> jax.Array:
  """Sharding constraint on an activation by logical names; a no-op without a plan."""
  return x if plan is None else plan.constrain(x, logical_axes)
