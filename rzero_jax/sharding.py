"""Device meshes and sharding strategies (tables from logical axis names to mesh axes).

A strategy is data, not code: `STRATEGIES[name]` is a tuple of (logical axis, mesh axis or axes)
pairs, and every weight and activation names its logical axes (the model's
`nn.with_logical_partitioning` declarations, read by `models.param_axes`, and its `constrain`
calls). The tables have the format of flax's `nn.logical_axis_rules`; `register_strategy` adds
one from an experiment config.

Rules are read in order, as in flax's `logical_to_mesh_axes`: a rule gives its mesh axes to the
array dimension carrying its logical name unless another dimension of the same array already took
one of them. A dimension whose size a mesh axis does not divide stays unsplit along that axis (with
a one-time warning); for weights, the axis then moves to the largest other dimension it divides, so
every large weight stays split (e.g. a vocabulary of 97 under `tensor:4` splits the embedding's
`embed` dimension instead).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, Any], ...]

# Weight dimensions that never receive a mesh axis moved off an indivisible dimension (the stacked
# layer axis is sliced by the layer scan; splitting it would gather every layer on every step).
_NO_REASSIGN = ("layers",)

STRATEGIES: dict[str, Rules] = {
    "dp": (("batch", ("data", "fsdp")),),
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

_log = logging.getLogger(__name__)
_warned: set[tuple] = set()


def entry_axes(entry: Any) -> tuple[str, ...]:
  """The mesh axes of a rule target or PartitionSpec entry (None, a name, or a tuple of names)."""
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _canonical_rules(rules: Sequence[tuple[str, Any]]) -> Rules:
  out = []
  for rule in rules:
    if len(rule) != 2:
      raise ValueError(
          f"Bad sharding rule {rule!r}: write (logical_axis, mesh_axis), where mesh_axis is "
          "a mesh axis name, a tuple of them, or None."
      )
    name, target = rule
    out.append((str(name), tuple(target) if isinstance(target, (list, tuple)) else target))
  return tuple(out)


def register_strategy(name: str, rules: Sequence[tuple[str, Any]]) -> None:
  """Adds a named strategy: a table of (logical axis, mesh axis | tuple of mesh axes | None) pairs."""
  STRATEGIES[name] = _canonical_rules(rules)


def get_rules(strategy: str | Sequence[tuple[str, Any]]) -> Rules:
  """Resolves a strategy name (or an explicit rules table) to a rules tuple."""
  if isinstance(strategy, str):
    if strategy not in STRATEGIES:
      raise ValueError(
          f"Unknown sharding strategy {strategy!r}: choose one of {sorted(STRATEGIES)} "
          "or register your own with rzero_jax.sharding.register_strategy."
      )
    return STRATEGIES[strategy]
  return _canonical_rules(strategy)


def parse_mesh_spec(spec: str, num_devices: int) -> dict[str, int]:
  """Axis sizes {data, fsdp, tensor} from a spec like "data:2,fsdp:-1" for `num_devices` devices."""
  sizes = {axis: 1 for axis in MESH_AXES}
  named = []
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, sep, value = (s.strip() for s in part.partition(":"))
    if not sep or name not in MESH_AXES or name in named:
      raise ValueError(
          f"Bad mesh spec {spec!r}: write comma-separated `axis:size` pairs with axes "
          f"from {MESH_AXES}, each at most once (e.g. 'data:2,fsdp:2,tensor:2')."
      )
    try:
      sizes[name] = int(value)
    except ValueError:
      raise ValueError(
          f"Bad mesh spec {spec!r}: size {value!r} of axis {name!r} is not an integer."
      )
    named.append(name)
  wildcard = [a for a in MESH_AXES if sizes[a] == -1]
  if len(wildcard) > 1 or any(s == 0 or s < -1 for s in sizes.values()):
    raise ValueError(f"Bad mesh spec {spec!r}: sizes must be positive, with at most one -1.")
  known = math.prod(s for s in sizes.values() if s != -1)
  if wildcard:
    if num_devices % known:
      raise ValueError(
          f"Mesh spec {spec!r} cannot fill {num_devices} devices: {num_devices} is "
          f"not a multiple of {known}."
      )
    sizes[wildcard[0]] = num_devices // known
  total = math.prod(sizes.values())
  if total != num_devices:
    raise ValueError(
        f"Mesh spec {spec!r} needs {total} devices but {num_devices} are available: make the sizes "
        f"multiply to {num_devices} (or use -1 for one axis to take the remaining devices)."
    )
  return sizes


def make_mesh(spec: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh from a spec like "data:2,fsdp:2,tensor:2"; one size may be -1 (the rest).

  Axes not named get size 1, so every mesh has the axes `data`, `fsdp` and `tensor`, in that order
  (`data` outermost: on a multi-host run it spans hosts first). Devices are laid out along the
  physical topology (`jax.make_mesh`), over all processes' devices unless `devices` is given.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = parse_mesh_spec(spec, len(devices))
  return jax.make_mesh(
      tuple(sizes[a] for a in MESH_AXES),
      MESH_AXES,
      axis_types=(AxisType.Auto,) * len(MESH_AXES),
      devices=devices,
  )


def _warn_once(key: tuple, message: str) -> None:
  if key not in _warned:
    _warned.add(key)
    _log.warning(message)


def logical_to_spec(
    logical_axes: Sequence[str | None],
    rules: Rules,
    axis_sizes: dict[str, int],
    shape: Sequence[int] | None = None,
    *,
    weight: bool = False,
) -> PartitionSpec:
  """The PartitionSpec of an array with `logical_axes` under `rules` on a mesh of `axis_sizes`.

  With a `shape`, mesh axes that do not divide their dimension are dropped (warned once); with
  `weight=True` each dropped axis moves to the largest other dimension (not `layers`) it divides.
  The spec has one entry per dimension; mesh axes of size 1 are left out of it.
  """
  logical_axes = tuple(logical_axes)
  if shape is not None and len(shape) != len(logical_axes):
    raise ValueError(
        f"Array of shape {tuple(shape)} was given {len(logical_axes)} logical axes "
        f"{logical_axes}: give one name (or None) per dimension."
    )
  assigned: list[tuple[str, ...] | None] = [None] * len(logical_axes)
  used: set[str] = set()
  dropped: list[tuple[int, str]] = []
  for name, target in rules:
    for pos, axis_name in enumerate(logical_axes):
      if axis_name != name or assigned[pos] is not None:
        continue
      mesh_axes = entry_axes(target)
      if any(a in used for a in mesh_axes):
        continue
      used.update(mesh_axes)
      kept: tuple[str, ...] = ()
      for a in mesh_axes:
        if axis_sizes[a] == 1:
          continue
        if shape is not None and shape[pos] % (
            math.prod(axis_sizes[k] for k in kept) * axis_sizes[a]
        ):
          dropped.append((pos, a))
        else:
          kept += (a,)
      assigned[pos] = kept
  for pos, a in dropped:
    moved_to = None
    if weight:
      order = sorted(
          (p for p, n in enumerate(logical_axes) if n not in _NO_REASSIGN and p != pos),
          key=lambda p: -shape[p],
      )
      for p in order:
        split = math.prod(axis_sizes[k] for k in assigned[p] or ())
        if shape[p] % (split * axis_sizes[a]) == 0:
          assigned[p] = (assigned[p] or ()) + (a,)
          moved_to = p
          break
    where = (
        f"splitting dimension {logical_axes[moved_to]!r} (size {shape[moved_to]}) over it instead"
        if moved_to is not None
        else "so it is replicated along that axis"
    )
    _warn_once(
        (logical_axes, tuple(shape), a, axis_sizes[a], weight),
        f"Sharding: dimension {logical_axes[pos]!r} (size {shape[pos]}) of an array with logical "
        f"axes {logical_axes} and shape {tuple(shape)} is not divisible by mesh axis {a!r} "
        f"(size {axis_sizes[a]}); {where}. Choose mesh sizes that divide it for the planned layout.",
    )
  return PartitionSpec(*(None if not m else m[0] if len(m) == 1 else m for m in assigned))


@dataclasses.dataclass(frozen=True)
class ShardingPlan:
  """A mesh plus a strategy's rules: turns logical axis names into shardings. Hashable (jit-static)."""

  mesh: Mesh
  rules: Rules

  def sharding(
      self,
      logical_axes: Sequence[str | None],
      shape: Sequence[int] | None = None,
      *,
      weight: bool = False,
  ) -> NamedSharding:
    """NamedSharding by logical names (divisibility-checked when `shape` is given)."""
    spec = logical_to_spec(logical_axes, self.rules, dict(self.mesh.shape), shape, weight=weight)
    return NamedSharding(self.mesh, spec)

  def shards(self, logical_axis: str, size: int | None = None) -> int:
    """How many pieces a dimension of logical axis `logical_axis` (of `size`, when given: with
    the fallback for sizes that do not divide) is split into."""
    spec = self.sharding((logical_axis,), None if size is None else (size,)).spec
    return math.prod(self.mesh.shape[a] for a in entry_axes(spec[0]))

  def constrain(self, x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`nn.with_logical_constraint` under this plan's rules and mesh; where a mesh axis does not
    divide its dimension (flax has no fallback), the constraint uses our fallback spec instead."""
    sharding = self.sharding(logical_axes, x.shape)
    if sharding.spec == self.sharding(logical_axes).spec:  # every split divides: flax's rule walk
      return nn.with_logical_constraint(x, tuple(logical_axes), rules=self.rules, mesh=self.mesh)
    return jax.lax.with_sharding_constraint(x, sharding)


def make_plan(mesh: Mesh | None, strategy: str | Sequence | None) -> ShardingPlan | None:
  """A `ShardingPlan` (strategy defaults to "fsdp"), or None when no mesh is given (unsharded)."""
  if mesh is None:
    return None
  rules = get_rules(strategy or "fsdp")
  for name, target in rules:
    missing = [a for a in entry_axes(target) if a not in mesh.axis_names]
    if missing:
      raise ValueError(
          f"Sharding rule ({name!r}, {target!r}) names mesh axes {missing} that the mesh "
          f"{dict(mesh.shape)} lacks: use axes from {tuple(mesh.axis_names)}."
      )
  return ShardingPlan(mesh=mesh, rules=rules)


def constrain(
    x: jax.Array, logical_axes: Sequence[str | None], plan: ShardingPlan | None
) -> jax.Array:
  """Sharding constraint on an activation by logical names; a no-op without a plan."""
  return x if plan is None else plan.constrain(x, logical_axes)


# ---------------------------------------------------------------------------------------------
# Params.


def tree_shardings(axes: Any, shapes: Any, plan: ShardingPlan) -> Any:
  """NamedSharding of every weight of a tree, from its logical axes (a tree of name tuples, e.g.
  `models.param_axes(cfg)`) and shapes (same structure), with the weight fallback for sizes that do
  not divide. Models declare their axes; this module knows no model."""
  is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, str) for a in x)  # noqa: E731
  return jax.tree.map(
      lambda names, shape: plan.sharding(names, shape, weight=True), axes, shapes, is_leaf=is_axes
  )


def bytes_on_device(tree: Any, device: jax.Device | None = None) -> int:
  """Bytes that the arrays of `tree` hold on `device` (default: this process's first device)."""
  device = jax.local_devices()[0] if device is None else device
  return sum(
      shard.data.nbytes
      for leaf in jax.tree.leaves(tree)
      for shard in leaf.addressable_shards
      if shard.device == device
  )
