"""RZeroRun's setup and update on 8 simulated devices: loading straight onto the mesh, how many
copies of the weights the roles hold, master-weight dtype, phase starts, the old-policy recompute.
"""

import os
import warnings

import jax
import numpy as np
import pytest

from experiments import demo
from experiments.toy_arith.build import ensure_base_model
from rzero_jax.models import decoder
from rzero_jax.rzero import dataset, loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def base_model():
  return ensure_base_model(os.path.join(REPO, ".cache"))


def _config(base_model, **overrides):
  c = demo.get_config("smoke")
  c.model_path = base_model
  c.mesh = "fsdp:8"
  c.challenger.strategy = c.solver.strategy = "fsdp"
  c.challenger.update(prompts_per_step=8, prompts_per_update=8)
  c.challenger.train.micro_batch_size = 16
  for key, value in overrides.items():
    target = c
    *path, leaf = key.split(".")
    for part in path:
      target = target[part]
    target[leaf] = value
  return c


def _run(config, workdir):
  run = loop.RZeroRun(config, str(workdir))
  run.writer.close()
  return run


def _is_whole(shape, sharding) -> bool:
  return tuple(sharding.shard_shape(tuple(shape))) == tuple(shape)


def _matrix_shapes(cfg) -> set:
  """Shapes of the weight matrices (two or more axes besides the stacked layer axis)."""
  axes, shapes = decoder.param_axes(cfg), decoder.param_shapes(cfg)
  is_tuple = lambda x: isinstance(x, tuple)  # noqa: E731
  pairs = zip(jax.tree.leaves(axes, is_leaf=is_tuple), jax.tree.leaves(shapes, is_leaf=is_tuple))
  return {tuple(shape) for names, shape in pairs if len([a for a in names if a != "layers"]) >= 2}


def test_loading_on_an_fsdp_mesh_never_puts_a_whole_matrix_on_one_device(
    base_model, tmp_path, monkeypatch
):
  placements = []
  real_callback, real_put = jax.make_array_from_callback, jax.device_put

  def spy_callback(shape, sharding, callback, *args, **kwargs):
    placements.append(("callback", tuple(shape), _is_whole(shape, sharding)))
    return real_callback(shape, sharding, callback, *args, **kwargs)

  def spy_put(x, device=None, *args, **kwargs):
    if isinstance(x, np.ndarray):
      whole = device is None or not hasattr(device, "shard_shape") or _is_whole(x.shape, device)
      placements.append(("device_put", x.shape, whole))
    return real_put(x, device, *args, **kwargs)

  monkeypatch.setattr(jax, "make_array_from_callback", spy_callback)
  monkeypatch.setattr(jax, "device_put", spy_put)
  run = _run(_config(base_model), tmp_path)
  monkeypatch.undo()
  matrices = _matrix_shapes(run.cfg)
  placed = [p for p in placements if p[1] in matrices]
  assert {p[1] for p in placed if p[0] == "callback"} == matrices  # each loaded shard by shard
  assert not [p for p in placed if p[2]], placed
  trees = {"challenger": run.challenger.state, "solver": run.solver.state, "ref": run.ref_params}
  for name, tree in trees.items():
    for leaf in jax.tree.leaves(tree):
      if tuple(leaf.shape) in matrices:
        assert not _is_whole(leaf.shape, leaf.sharding), (name, leaf.shape, leaf.sharding)


def test_roles_hold_two_copies_plus_the_reference(base_model, tmp_path):
  run = _run(_config(base_model), tmp_path)
  weights = sum(x.nbytes for x in jax.tree.leaves(run.challenger.params))
  live = sum(x.nbytes for x in jax.live_arrays())
  # Challenger and Solver weights, their AdamW moments (2 each), the reference: 7 copies. The
  # loaded base model is the Challenger's weights, not one more copy.
  assert live < 7.2 * weights, live / weights


def test_param_dtype_reaches_master_weights_and_adamw_state(base_model, tmp_path):
  with pytest.warns(RuntimeWarning, match="param_dtype=bfloat16"):
    run = _run(_config(base_model, param_dtype="bfloat16"), tmp_path)
  for tree in (run.solver.state.params, run.solver.state.opt_state, run.challenger.state.params):
    float_leaves = [
        x for x in jax.tree.leaves(tree) if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)
    ]
    assert float_leaves and all(x.dtype == jax.numpy.bfloat16 for x in float_leaves)
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)
    run = _run(_config(base_model), tmp_path / "f32")  # float32: no warning
  assert all(x.dtype == jax.numpy.float32 for x in jax.tree.leaves(run.solver.state.params))


@pytest.mark.parametrize("fresh", [True, False])
def test_phase_start_sets_the_reference_and_optionally_a_fresh_optimizer(
    base_model, tmp_path, fresh
):
  run = _run(_config(base_model, fresh_optimizer_each_phase=fresh), tmp_path)
  prompt_ids = [run.challenger_prompt] * 8
  out = run.sample(
      run.challenger,
      prompt_ids,
      num_samples=4,
      seed=1,
      temperature=1.0,
      top_p=1.0,
      max_new_tokens=24,
  )
  run._grpo_update(run.challenger, prompt_ids, out, np.linspace(-1, 1, 32))
  assert int(run.challenger.state.step) == 1
  trained = jax.tree.map(np.asarray, run.challenger.params)
  run.start_phase(run.challenger)
  assert int(run.challenger.state.step) == (0 if fresh else 1)
  moments = [
      np.abs(np.asarray(x)).max()
      for x in jax.tree.leaves(run.challenger.state.opt_state)
      if x.ndim >= 2
  ]
  assert (max(moments) == 0) == fresh
  for tree in (run.challenger.params, run.ref_params):  # weights kept; reference = them
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, tree), trained)


def test_update_recomputes_old_logprobs_so_the_first_ratio_is_one(base_model, tmp_path):
  config = _config(base_model, dtype="bfloat16")
  config.challenger.train.kl_coef = 0.01
  run = _run(config, tmp_path)
  prompt_ids = [run.challenger_prompt] * 8
  out = run.sample(
      run.challenger,
      prompt_ids,
      num_samples=4,
      seed=3,
      temperature=1.0,
      top_p=1.0,
      max_new_tokens=24,
  )
  metrics = run._grpo_update(run.challenger, prompt_ids, out, np.linspace(-1, 1, 32))
  assert metrics["clip_frac"] == 0.0
  assert 0.0 <= metrics["logprob_mismatch"] < 0.05
  assert metrics["kl"] == 0.0  # the reference is the policy before its first update

  # Without the recompute, a sampler at another temperature gives ratios far from 1: clipped.
  run = _run(_config(base_model, recompute_old_logprobs=False), tmp_path / "sampler")
  hot = run.sample(
      run.challenger,
      prompt_ids,
      num_samples=4,
      seed=3,
      temperature=3.0,
      top_p=1.0,
      max_new_tokens=24,
  )
  metrics = run._grpo_update(run.challenger, prompt_ids, hot, np.linspace(-1, 1, 32))
  assert metrics["clip_frac"] > 0.1 and "logprob_mismatch" not in metrics


def test_replay_reads_the_earlier_iterations_datasets(base_model, tmp_path):
  run = _run(_config(base_model, **{"dataset.replay": True}), tmp_path)
  rows = {
      i: [{"question": f"q{i}{j}", "label": str(j), "p_hat": 0.8} for j in range(i + 1)]
      for i in (1, 2, 3)
  }
  for i, kept in rows.items():
    dataset.write_jsonl(os.path.join(tmp_path, "data", f"iter_{i}.jsonl"), kept)
  assert run.earlier_datasets(0) == []
  assert run.earlier_datasets(1) == rows[1]
  assert run.earlier_datasets(2) == rows[1] + rows[2]  # iteration 3 also trains on these
