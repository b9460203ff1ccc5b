"""Meshes, strategies, sharded loading and compute on 8 simulated CPU devices, and 2 processes."""

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from rzero_jax import multihost, sharding
from rzero_jax.models import functional, hf_io
from rzero_jax.training import TrainConfig, init_train_state, make_train_step
from rzero_jax.training.train_state import optimizer_state_shardings
from tests.support import STRATEGY_MESHES, hf_fixtures, multihost_worker

ACCEPTANCE = STRATEGY_MESHES
LARGE = ("embed", "lm_head", "q", "k", "v", "o", "gate", "up", "down")
TOL = 1e-5

# A config whose every dimension divides 8, for the exact layouts.
DIVISIBLE = hf_fixtures.tiny_config(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_heads=8, num_kv_heads=8
)


@pytest.fixture(scope="module")
def tiny_qwen2_dir(tmp_path_factory):
  """Untied embeddings and q/k/v biases (vocab 97, 4 heads, 2 kv heads: indivisible dims)."""
  return hf_fixtures.save_tiny_model(tmp_path_factory.mktemp("qwen2"), "qwen2")


def _unsharded_logits(path, tokens, mask):
  cfg, params = hf_io.load_pretrained(path, dtype="float32")
  return np.asarray(jax.jit(lambda p: functional.forward(cfg, p, tokens, mask))(params))


def _large_weights(params):
  return {k: v for k, v in {**params, **params["layers"]}.items() if k in LARGE}


def _trim(spec: P) -> P:
  """The spec without trailing unsplit dimensions, for readable expectations."""
  entries = list(spec)
  while entries and entries[-1] is None:
    entries.pop()
  return P(*entries)


def _is_split(x: jax.Array) -> bool:
  return x.addressable_shards[0].data.size < x.size


# --- meshes -----------------------------------------------------------------------------------


def test_make_mesh_axes_sizes_and_wildcard():
  mesh = sharding.make_mesh("data:2,fsdp:-1")
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  assert dict(sharding.make_mesh("tensor:8").shape) == {"data": 1, "fsdp": 1, "tensor": 8}
  assert sorted(d.id for d in sharding.make_mesh("fsdp:4", jax.devices()[:4]).devices.flat) == [
      0,
      1,
      2,
      3,
  ]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("data:3", "needs 3 devices but 8"),
        ("data:2,fsdp:2", "multiply to 8"),
        ("data:3,fsdp:-1", "not a multiple of 3"),
        ("data:-1,fsdp:-1", "at most one -1"),
        ("pipeline:8", "Bad mesh spec"),
        ("data:2,data:4", "each at most once"),
        ("data:x", "not an integer"),
    ],
)
def test_make_mesh_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(spec)


# --- rules ------------------------------------------------------------------------------------


def test_rule_order_gives_fsdp_to_batch_before_embed():
  sizes = {"data": 2, "fsdp": 4, "tensor": 1}
  rules = sharding.get_rules("fsdp")
  assert sharding.logical_to_spec(("batch", "length", "embed"), rules, sizes) == P(
      ("data", "fsdp"), None, None
  )
  assert sharding.logical_to_spec(("vocab", "embed"), rules, sizes) == P(None, "fsdp")
  # Mesh axes of size 1 are left out.
  assert sharding.logical_to_spec(
      ("batch", "embed"), rules, {"data": 8, "fsdp": 1, "tensor": 1}
  ) == P("data", None)


def test_indivisible_dims_replicate_activations_and_move_weights(caplog):
  sizes = {"data": 2, "fsdp": 1, "tensor": 4}
  rules = sharding.get_rules("tp")
  with caplog.at_level(logging.WARNING, logger="rzero_jax.sharding"):
    act = sharding.logical_to_spec(("batch", "length", "vocab"), rules, sizes, (6, 5, 91))
    again = sharding.logical_to_spec(("batch", "length", "vocab"), rules, sizes, (6, 5, 91))
    weight = sharding.logical_to_spec(
        ("layers", "vocab", "embed"), rules, sizes, (4, 91, 24), weight=True
    )
  assert act == again == P("data", None, None)
  assert weight == P(None, None, "tensor")  # the largest other dim it divides, never `layers`
  warnings = [r.getMessage() for r in caplog.records]
  assert sum("(6, 5, 91)" in w and "replicated" in w for w in warnings) == 1  # once only
  assert any("(4, 91, 24)" in w and "splitting dimension 'embed'" in w for w in warnings)
  # Partial: a batch of 6 keeps `data` (2) but not `fsdp` (2) on top of it.
  assert sharding.logical_to_spec(
      ("batch",), sharding.get_rules("dp"), {"data": 2, "fsdp": 2, "tensor": 2}, (6,)
  ) == P("data")


@pytest.mark.parametrize(
    "strategy, spec, expected",
    [
        ("dp", "data:8", {"embed": P(), "q": P(), "down": P(), "attn_norm": P()}),
        (
            "fsdp",
            "fsdp:8",
            {
                "embed": P(None, "fsdp"),
                "q": P(None, "fsdp"),
                "o": P(None, None, None, "fsdp"),
                "down": P(None, None, "fsdp"),
                "attn_norm": P(),
            },
        ),
        (
            "tp",
            "data:2,tensor:4",
            {
                "embed": P("tensor"),
                "q": P(None, None, "tensor"),
                "k": P(None, None, "tensor"),
                "o": P(None, "tensor"),
                "gate": P(None, None, "tensor"),
                "down": P(None, "tensor"),
                "attn_norm": P(),
            },
        ),
        (
            "fsdp_tp",
            "data:2,fsdp:2,tensor:2",
            {
                "embed": P("tensor", "fsdp"),
                "q": P(None, "fsdp", "tensor"),
                "o": P(None, "tensor", None, "fsdp"),
                "up": P(None, "fsdp", "tensor"),
                "down": P(None, "tensor", "fsdp"),
                "q_norm": P(),
            },
        ),
    ],
)
def test_param_shardings_layouts(strategy, spec, expected):
  plan = sharding.make_plan(sharding.make_mesh(spec), strategy)
  shardings = functional.param_shardings(DIVISIBLE, plan)
  flat = {**shardings, **shardings["layers"]}
  for name, want in expected.items():
    assert _trim(flat[name].spec) == want, name


def test_register_strategy_and_errors():
  sharding.register_strategy("mlp_only", [("batch", ["data"]), ("mlp", "tensor")])
  try:
    plan = sharding.make_plan(sharding.make_mesh("data:2,tensor:4"), "mlp_only")
    specs = functional.param_shardings(DIVISIBLE, plan)
    assert specs["layers"]["gate"].spec == P(None, None, "tensor")
    assert _trim(specs["layers"]["q"].spec) == P() and _trim(specs["embed"].spec) == P()
  finally:
    del sharding.STRATEGIES["mlp_only"]
  with pytest.raises(ValueError, match="Unknown sharding strategy 'mlp_only'"):
    sharding.make_plan(sharding.make_mesh("data:8"), "mlp_only")
  with pytest.raises(ValueError, match="lacks"):
    sharding.make_plan(sharding.make_mesh("data:8"), [("embed", "model")])


# --- sharded loading and compute --------------------------------------------------------------


@pytest.mark.parametrize("strategy, spec", ACCEPTANCE)
@pytest.mark.parametrize("family", ["qwen3", "qwen2"])
def test_load_pretrained_sharded_matches_unsharded(
    strategy, spec, family, tiny_qwen3_dir, tiny_qwen2_dir
):
  path = {"qwen3": tiny_qwen3_dir, "qwen2": tiny_qwen2_dir}[family]
  tokens, mask = multihost_worker.example_tokens(97)
  mesh = sharding.make_mesh(spec)
  cfg, params = hf_io.load_pretrained(path, dtype="float32", mesh=mesh, strategy=strategy)
  plan = sharding.make_plan(mesh, strategy)
  logits = jax.jit(lambda p: functional.forward(cfg, p, tokens, mask, plan=plan))(params)
  np.testing.assert_allclose(
      np.asarray(logits), _unsharded_logits(path, tokens, mask), atol=TOL, rtol=0
  )
  assert jax.tree.map(lambda x: x.sharding, params) == functional.param_shardings(cfg, plan)

  total = sum(x.nbytes for x in jax.tree.leaves(params))
  on_device0 = sharding.bytes_on_device(params, mesh.devices.flat[0])
  if strategy == "dp":
    assert on_device0 == total
    assert not any(_is_split(x) for x in jax.tree.leaves(params))
  else:
    assert on_device0 < 0.3 * total, (on_device0, total)
    unsplit = [k for k, x in _large_weights(params).items() if not _is_split(x)]
    assert not unsplit, unsplit


def test_shard_params_matches_loaded_layout_and_logits(tiny_qwen2_dir):
  cfg, host = hf_io.load_pretrained(tiny_qwen2_dir, dtype="float32")
  mesh = sharding.make_mesh("data:2,fsdp:2,tensor:2")
  plan = sharding.make_plan(mesh, "fsdp_tp")
  params = functional.shard_params(cfg, host, plan)
  _, loaded = hf_io.load_pretrained(tiny_qwen2_dir, dtype="float32", mesh=mesh, strategy="fsdp_tp")
  assert jax.tree.map(lambda x: x.sharding, params) == jax.tree.map(lambda x: x.sharding, loaded)
  tokens, mask = multihost_worker.example_tokens(cfg.vocab_size)
  logits = jax.jit(lambda p: functional.forward(cfg, p, tokens, mask, plan=plan))(params)
  np.testing.assert_allclose(
      np.asarray(logits), _unsharded_logits(tiny_qwen2_dir, tokens, mask), atol=TOL, rtol=0
  )


def _loss(cfg, params, tokens, mask, plan):
  logits = functional.forward(cfg, params, tokens, mask, plan=plan)
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  return -(picked * mask[:, 1:]).sum() / mask[:, 1:].sum()


@pytest.mark.slow
def test_gradients_under_fsdp_tp_match_unsharded():
  strategy, spec = "fsdp_tp", "data:2,fsdp:2,tensor:2"
  cfg = dataclasses.replace(DIVISIBLE, scan_layers=True, remat=True)
  host = functional.init_params(cfg, jax.random.PRNGKey(0), std=0.1)
  tokens, mask = multihost_worker.example_tokens(cfg.vocab_size)
  grad = jax.jit(
      jax.value_and_grad(lambda p, plan: _loss(cfg, p, tokens, mask, plan)), static_argnums=1
  )
  ref_loss, ref_grads = grad(host, None)
  plan = sharding.make_plan(sharding.make_mesh(spec), strategy)
  loss, grads = grad(functional.shard_params(cfg, host, plan), plan)
  np.testing.assert_allclose(float(loss), float(ref_loss), atol=TOL, rtol=0)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=TOL, rtol=0)


def test_kv_cache_path_under_tp_matches_unsharded(tiny_qwen3_dir):
  cfg, host = hf_io.load_pretrained(tiny_qwen3_dir, dtype="float32")
  mesh = sharding.make_mesh("data:2,tensor:4")
  plan = sharding.make_plan(mesh, "tp")
  tokens, mask = multihost_worker.example_tokens(cfg.vocab_size)
  positions = functional.default_positions(mask)
  kv_valid = np.concatenate([mask, np.zeros((8, 4), np.int32)], axis=1).astype(bool)

  def prefill(params, cache, plan):
    return functional.forward_with_cache(
        cfg, params, tokens, positions, cache, 0, kv_valid, plan=plan
    )

  step = jax.jit(prefill, static_argnums=2)
  ref_logits, ref_cache = step(host, functional.init_cache(cfg, 8, 16), None)
  cache = functional.init_cache(cfg, 8, 16)
  cache = jax.device_put(cache, plan.sharding(functional.CACHE_AXES, cache["k"].shape))
  logits, new_cache = step(functional.shard_params(cfg, host, plan), cache, plan)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=TOL, rtol=0)
  np.testing.assert_allclose(
      np.asarray(new_cache["k"]), np.asarray(ref_cache["k"]), atol=TOL, rtol=0
  )
  assert _trim(new_cache["k"].sharding.spec) == P(
      None, "data"
  )  # kv_heads (2) do not divide tensor (4)


# --- optimizer state and batches --------------------------------------------------------------


def test_optimizer_state_follows_param_shardings():
  mesh = sharding.make_mesh("data:2,fsdp:2,tensor:2")
  params = functional.init_params(DIVISIBLE, jax.random.PRNGKey(0))
  shardings = functional.param_shardings(DIVISIBLE, sharding.make_plan(mesh, "fsdp_tp"))
  params = jax.device_put(params, shardings)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  out = optimizer_state_shardings(opt, params, shardings, mesh)
  state = jax.jit(opt.init, out_shardings=out)(params)
  adam = state[1][0]
  assert jax.tree.map(lambda x: x.sharding, adam.mu) == shardings
  assert jax.tree.map(lambda x: x.sharding, adam.nu) == shardings
  assert _trim(adam.count.sharding.spec) == P()
  assert sharding.bytes_on_device(state) < 3 * sharding.bytes_on_device(
      params
  )  # 2 moments + scalars


def test_host_to_global_and_process_rows():
  mesh = sharding.make_mesh("data:2,fsdp:2,tensor:2")
  plan = sharding.make_plan(mesh, "fsdp_tp")
  tokens, mask = multihost_worker.example_tokens(97)
  assert multihost.process_rows(plan, 8) == slice(0, 8)
  batch = multihost.host_to_global(
      {"tokens": tokens, "reward": mask[:, 0].astype(np.float32)}, plan, ("batch", "length")
  )
  assert batch["tokens"].sharding.spec == P(("data", "fsdp"), None)
  assert batch["reward"].sharding.spec == P(("data", "fsdp"))
  assert batch["tokens"].addressable_shards[0].data.shape == (2, 12)
  np.testing.assert_array_equal(np.asarray(batch["tokens"]), tokens)
  odd = multihost.host_to_global(tokens[:6], plan)  # 6 rows: `data` only
  assert odd.sharding.spec == P("data", None)
  np.testing.assert_array_equal(np.asarray(odd), tokens[:6])
  assert multihost.process_rows(None, 8) == slice(0, 8)
  np.testing.assert_array_equal(
      np.asarray(multihost.host_to_global({"t": tokens}, None)["t"]), tokens
  )


# --- multi-process ----------------------------------------------------------------------------


def test_initialize_distributed_single_process_and_errors(monkeypatch):
  for name in (
      "RZERO_COORDINATOR",
      "RZERO_NUM_PROCESSES",
      "RZERO_PROCESS_ID",
      "JAX_COORDINATOR_ADDRESS",
  ):
    monkeypatch.delenv(name, raising=False)
  assert multihost.initialize_distributed() is False
  assert not jax.distributed.is_initialized()
  assert multihost.is_main_process()
  monkeypatch.setenv("RZERO_COORDINATOR", "127.0.0.1:1234")
  with pytest.raises(ValueError, match="Incomplete multi-process setup"):
    multihost.initialize_distributed(num_processes=2)
  monkeypatch.setenv("RZERO_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match="RZERO_NUM_PROCESSES='two' is not an integer"):
    multihost.initialize_distributed()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_qwen3_dir):
  plans = ["fsdp_tp@data:2,fsdp:2,tensor:2", "tp@data:2,tensor:4"]
  multihost_worker.run_processes(
      [
          "--mode=forward",
          "--mode=batch",
          "--mode=loss",
          f"--model={tiny_qwen3_dir}",
          f"--out={tmp_path}/out",
          *(f"--plan={p}" for p in plans),
      ],
      str(tmp_path),
      num_processes=2,
      devices_per_process=4,
  )
  tokens, mask = multihost_worker.example_tokens(97)
  want = _unsharded_logits(tiny_qwen3_dir, tokens, mask)
  cfg, host = hf_io.load_pretrained(tiny_qwen3_dir, dtype="float32")
  total = sum(x.nbytes for x in jax.tree.leaves(host))
  train_cfg = TrainConfig(**multihost_worker.LOSS_TRAIN_CONFIG)
  state = init_train_state(cfg, train_cfg, host)
  _, metrics = make_train_step(cfg, train_cfg)(
      state, multihost_worker.example_grpo_batch(cfg.vocab_size)
  )
  for process in range(2):
    out = np.load(tmp_path / f"out.{process}.npz")
    for plan in plans:
      np.testing.assert_allclose(out[f"forward/{plan}/logits"], want, atol=TOL, rtol=0)
      assert out[f"forward/{plan}/bytes_on_device0"] < 0.3 * total
      assert list(out[f"batch/{plan}/rows"]) == [4 * process, 4 * process + 4]
      np.testing.assert_array_equal(out[f"batch/{plan}/tokens"], tokens)
      assert out[f"batch/{plan}/odd_refused"]
      np.testing.assert_allclose(out[f"loss/{plan}/loss"], metrics["loss"], atol=1e-5, rtol=1e-5)
      np.testing.assert_allclose(out[f"loss/{plan}/grad_norm"], metrics["grad_norm"], rtol=1e-4)
