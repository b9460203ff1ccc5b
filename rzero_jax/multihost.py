"""Multi-process runs: joining `jax.distributed`, process 0's role, decisions shared from it, and
each process's rows of a global batch.

Every process runs the same program. Host-side decisions (rewards, votes, kept questions) are made
on process 0 and broadcast (`decided_on_main`); only process 0 writes logs and summaries
(`is_main_process`); each process feeds its own rows of every batch (`process_rows`,
`host_to_global`), whose layout comes from a `sharding.ShardingPlan`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Callable, Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import NamedSharding

from rzero_jax.sharding import ShardingPlan, entry_axes

T = TypeVar("T")

_log = logging.getLogger(__name__)


def _cluster_detected() -> bool:
  """True when JAX can find this process's peers itself (Cloud TPU VM, SLURM, Open MPI, GKE)."""
  from jax._src import clusters  # JAX's cluster auto-detection, not re-exported publicly

  return any(
      env.is_env_present()
      for env in clusters.ClusterEnv._cluster_types
      if not env.opt_in_only_method
  )


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"Environment variable {name}={value!r} is not an integer.")


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
  """Joins this process to a multi-process JAX run; call it first, before any other JAX call.

  Explicit values (e.g. from launcher flags) win over the environment variables
  RZERO_COORDINATOR ("host:port" of process 0; JAX_COORDINATOR_ADDRESS also works),
  RZERO_NUM_PROCESSES and RZERO_PROCESS_ID. Without any of them, JAX's automatic detection is used
  when it finds a cluster (Cloud TPU pods, SLURM, Open MPI, GKE); otherwise this is a
  single-process run and nothing happens.
  Returns whether `jax.distributed` is initialized.
  """
  if jax.distributed.is_initialized():
    return True
  address = (
      coordinator_address
      or os.environ.get("RZERO_COORDINATOR")
      or os.environ.get("JAX_COORDINATOR_ADDRESS")
      or None
  )
  count = num_processes if num_processes is not None else _env_int("RZERO_NUM_PROCESSES")
  index = process_id if process_id is not None else _env_int("RZERO_PROCESS_ID")
  explicit = (address, count, index)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit) and not _cluster_detected():
      raise ValueError(
          f"Incomplete multi-process setup (coordinator={address!r}, num_processes={count!r}, "
          f"process_id={index!r}): give all three, as arguments/flags or as RZERO_COORDINATOR, "
          "RZERO_NUM_PROCESSES and RZERO_PROCESS_ID (the same coordinator on every process)."
      )
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index)
  elif _cluster_detected():
    jax.distributed.initialize()
  else:
    return False
  _log.info(
      "jax.distributed: process %d of %d, %d local / %d global devices.",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )
  return True


def is_main_process() -> bool:
  """True on process 0, the one that writes logs and summaries (every process joins checkpoints)."""
  return jax.process_index() == 0


def decided_on_main(decide: Callable[[], T]) -> T:
  """Runs the host-side decision `decide()` on process 0 only and gives every process its result.

  For anything all processes must agree on but could compute differently (grading with deadlines,
  votes, files another process writes): process 0 computes it, the others receive it. The value
  must survive a JSON round trip (lists, dicts, str, float, int, bool, None); tuples come back as
  lists on every process, process 0 included, so all processes hold identical values.
  """
  if jax.process_count() == 1:
    return json.loads(json.dumps(decide()))
  from jax.experimental import multihost_utils

  payload = (
      np.frombuffer(json.dumps(decide()).encode(), np.uint8)
      if is_main_process()
      else (np.zeros((0,), np.uint8))
  )
  size = int(multihost_utils.broadcast_one_to_all(np.int64(payload.size)))
  buffer = payload if is_main_process() else np.zeros((size,), np.uint8)
  data = multihost_utils.broadcast_one_to_all(buffer)
  return json.loads(np.asarray(data, np.uint8).tobytes().decode())


# ---------------------------------------------------------------------------------------------
# Each process's rows of a global batch.


def _process_factors(sharding: NamedSharding, shape: Sequence[int]) -> tuple[int, ...]:
  """Per dimension: global size over this process's share of it (how many processes' slices tile it)."""
  shape = tuple(shape)

  def distinct(indices, dim):
    return len({idx[dim].indices(shape[dim])[:2] for idx in indices})

  every = sharding.devices_indices_map(shape).values()
  local = sharding.addressable_devices_indices_map(shape).values()
  return tuple(distinct(every, d) // distinct(local, d) for d in range(len(shape)))


def _planned_factors(plan: ShardingPlan, names: tuple[str | None, ...]) -> tuple[int, ...]:
  """`_process_factors` of the strategy's layout for these names (before divisibility fallbacks)."""
  intended = plan.sharding(names)
  spec = (tuple(intended.spec) + (None,) * len(names))[: len(names)]
  probe = tuple(math.prod(plan.mesh.shape[a] for a in entry_axes(e)) for e in spec)
  return _process_factors(intended, probe)


def _check_split(plan: ShardingPlan, names: tuple[str | None, ...], global_shape: tuple[int, ...]):
  """The sharding for `global_shape`; raises when a fallback would change how processes split it."""
  sharding = plan.sharding(names, global_shape)
  if _process_factors(sharding, global_shape) != _planned_factors(plan, names):
    raise ValueError(
        f"Global batch shape {global_shape} does not split over the processes as {plan.sharding(names).spec} "
        f"on mesh {dict(plan.mesh.shape)}: make each such dimension a multiple of its mesh axes' sizes."
    )
  return sharding


def process_rows(plan: ShardingPlan | None, global_batch: int) -> slice:
  """The rows of a `global_batch`-row batch that this process passes to `host_to_global`."""
  if plan is None:
    return slice(0, global_batch)
  sharding = _check_split(plan, ("batch",), (global_batch,))
  spans = {
      idx[0].indices(global_batch)[:2]
      for idx in sharding.addressable_devices_indices_map((global_batch,)).values()
  }
  start, stop = min(s for s, _ in spans), max(e for _, e in spans)
  if sum(e - s for s, e in spans) != stop - start:
    raise ValueError(
        f"This process's devices hold non-contiguous rows {sorted(spans)} of the batch on "
        f"mesh {dict(plan.mesh.shape)}: build the mesh with make_mesh (data axis outermost)."
    )
  return slice(start, stop)


def host_to_global(
    batch: Any, plan: ShardingPlan | None, logical_axes: Sequence[str | None] = ("batch",)
) -> Any:
  """Turns this process's host batch (a pytree of numpy arrays) into global sharded jax.Arrays.

  `logical_axes` names each leaf's leading dimensions (cut or padded with None to its rank). Every
  process passes its own rows (`process_rows`): along a dimension split across processes the global
  array is the concatenation of the processes' local arrays. Without a plan: `jax.device_put`.
  """
  if plan is None:
    return jax.device_put(batch)

  def convert(local):
    local = np.asarray(local)
    names = (tuple(logical_axes) + (None,) * local.ndim)[: local.ndim]
    global_shape = tuple(n * f for n, f in zip(local.shape, _planned_factors(plan, names)))
    return jax.make_array_from_process_local_data(
        _check_split(plan, names, global_shape), local, global_shape
    )

  return jax.tree.map(convert, batch)
