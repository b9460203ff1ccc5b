"""RZeroRun's setup and update on 8 simulated devices: loading straight onto the mesh, how many
copies of the weights the roles hold, master-weight dtype, phase starts, the old-policy recompute.
"""

import gc
import os
import re
import warnings

import jax
import numpy as np
import pytest

from experiments import demo
from experiments.toy_arith.build import ensure_base_model
from rzero_jax.models import functional
from rzero_jax.io import write_jsonl
from rzero_jax.models.tokenizer import encode_chat
from rzero_jax.rzero import loop
from rzero_jax.rzero.dataset import SolverVotes
from rzero_jax.rzero import verifier as verifier_lib
from rzero_jax.selfplay.roles import MISMATCH_METRICS, Completions
from rzero_jax.verify.voting import Vote
from tests.support import CACHE


@pytest.fixture(scope="module")
def base_model():
  return ensure_base_model(CACHE)


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
  axes, shapes = functional.param_axes(cfg), functional.param_shapes(cfg)
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
@pytest.mark.slow
def test_phase_start_sets_the_reference_and_optionally_a_fresh_optimizer(
    base_model, tmp_path, fresh
):
  run = _run(_config(base_model, fresh_optimizer_each_phase=fresh), tmp_path)
  trained = _train_challenger_once(run)  # full fine-tuning: the params are the state's
  assert int(run.challenger.state.step) == 1
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


@pytest.mark.slow
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
  metrics = run.grpo_update(run.challenger, prompt_ids, out, np.linspace(-1, 1, 32))
  assert metrics["clip_frac"] == 0.0
  assert 0.0 <= metrics["logprob_mismatch"] < 0.05
  assert 0.0 <= metrics["mismatch_kl"] < 0.05 and metrics["mismatch_max_ratio"] >= 1.0
  assert 0.0 <= metrics["mismatch_share_close"] <= 1.0
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
  metrics = run.grpo_update(run.challenger, prompt_ids, hot, np.linspace(-1, 1, 32))
  assert metrics["clip_frac"] > 0.1 and not set(MISMATCH_METRICS) & set(metrics)


def test_replay_reads_the_earlier_iterations_datasets(base_model, tmp_path):
  run = _run(_config(base_model, **{"dataset.replay": True}), tmp_path)
  rows = {
      i: [{"question": f"q{i}{j}", "label": str(j), "p_hat": 0.8} for j in range(i + 1)]
      for i in (1, 2, 3)
  }
  for i, kept in rows.items():
    write_jsonl(os.path.join(tmp_path, "data", f"iter_{i}.jsonl"), kept)
  assert run.earlier_datasets(0) == []
  assert run.earlier_datasets(1) == rows[1]
  assert run.earlier_datasets(2) == rows[1] + rows[2]  # iteration 3 also trains on these


def test_challenger_prompt_longer_than_its_limit_fails_at_start(base_model, tmp_path):
  with pytest.raises(loop.RunError) as e:
    _run(_config(base_model, **{"challenger.max_prompt_tokens": 4}), tmp_path)
  message = str(e.value)
  assert "\n" not in message
  assert re.fullmatch(
      r"The Challenger prompt is (\d+) tokens, longer than config\.challenger\.max_prompt_tokens "
      r"\(4\): raise it to at least \1\.",
      message,
  ), message


def _no_kl(base_model, **overrides):
  roles = {f"{r}.train.kl_coef": 0.0 for r in ("challenger", "solver")}
  return _config(base_model, **roles, **overrides)


def test_without_kl_no_reference_is_kept(base_model, tmp_path):
  gc.collect()
  run = _run(_no_kl(base_model), tmp_path)
  assert not run.keeps_reference() and run.ref_params is None and run.ref_role is None
  assert set(run.trees()) == {"challenger", "solver"}
  weights = sum(x.nbytes for x in jax.tree.leaves(run.challenger.params))
  live = sum(x.nbytes for x in jax.live_arrays())
  # Challenger and Solver weights and their AdamW moments: 6 copies, no reference
  assert live < 6.2 * weights, live / weights
  run.start_phase(run.solver)
  assert run.ref_params is None
  # any role with KL keeps one (it is the phase-start weights of the role in training)
  run = _run(_config(base_model, **{"challenger.train.kl_coef": 0.0}), tmp_path / "solver_kl")
  assert run.keeps_reference() and set(run.trees()) == {"challenger", "solver", "ref"}


def _train_challenger_once(run):
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
  run.grpo_update(run.challenger, prompt_ids, out, np.linspace(-1, 1, 32))
  return jax.tree.map(np.asarray, run.challenger.state.params)


@pytest.mark.parametrize("saved_with_kl", [False, True])
@pytest.mark.slow
def test_checkpoints_without_kl_restore(base_model, tmp_path, saved_with_kl):
  """A run without KL saves no reference and resumes from its own checkpoints, and from one
  written with a reference (as every R-Zero checkpoint was): the "ref" tree is not read."""
  config = _config(base_model) if saved_with_kl else _no_kl(base_model)
  run = _run(config, tmp_path)
  trained = _train_challenger_once(run)
  meta = loop._fresh_meta()
  meta.update(phase="solver", step=3)
  run.save(meta)
  run.close()
  assert os.path.isdir(tmp_path / "checkpoints" / "1" / "ref") == saved_with_kl
  resumed = _run(_no_kl(base_model), tmp_path)
  restored = resumed.restore()
  assert (restored["phase"], restored["step"]) == ("solver", 3)
  assert resumed.ref_params is None
  jax.tree.map(
      np.testing.assert_array_equal,
      jax.tree.map(np.asarray, resumed.challenger.state.params),
      trained,
  )
  resumed.close()


def test_solver_reward_pays_exactly_the_answers_the_vote_counts_for_the_label(
    base_model, tmp_path, monkeypatch
):
  """The Solver's reward and the vote decide "same answer" by one rule: with the same answers,
  an answer is rewarded exactly when the vote put it in the label's cluster, also on answers
  where `answers.grade` and the clustering disagreed (tests/verify/test_voting.py)."""
  run = _run(_config(base_model), tmp_path)
  size = run.config.solver.group_size
  lists = {
      "What is 1 + 1?": ["(1, 2)", "(1, 2)", "1 < x < 2", "3", "(1, 2)"],
      "What is 2 + 2?": ["9" * 401, "9" * 401, "1", "2", "9" * 401],
      "What is 3 + 3?": ["$ $", "$ $", "$ $", "5", "5"],
      "What is 4 + 4?": ["\\frac12", "0.5", "x", "1/2", "y"],
  }
  assert all(len(a) == size for a in lists.values())
  texts, index = [], {}
  for q, answer_list in lists.items():
    for k, a in enumerate(answer_list):
      index[tuple(run._solver_prompt(q)), k] = len(texts)
      texts.append(f"worked it out: \\boxed{{{a}}}")

  def fake_sample(role, prompt_ids, *, num_samples, **_):
    tokens = [[index[tuple(p), k]] for p in prompt_ids for k in range(num_samples)]
    return Completions(tokens, [[0.0]] * len(tokens), [True] * len(tokens))

  rewarded = []

  def fake_update(role, prompt_ids, out, rewards, **_):
    rewarded.append((prompt_ids, np.asarray(rewards)))
    return {}

  monkeypatch.setattr(run, "sample", fake_sample)
  monkeypatch.setattr(run, "decode", lambda t: texts[t[0]])
  monkeypatch.setattr(run, "grpo_update", fake_update)
  questions = list(lists)
  ballot = run._vote(questions, 0, size, 1.0, 1.0)
  votes, members = ballot.votes, ballot.members
  assert votes[2].label == "5"  # answers empty once canonicalised abstain
  kept = [{"question": q, "label": v.label, "p_hat": v.p_hat} for q, v in zip(questions, votes)]
  run.solver_step(0, 0, kept)
  [(prompt_ids, rewards)] = rewarded
  expected = {tuple(run._solver_prompt(q)): [c == 0 for c in m] for q, m in zip(questions, members)}
  got = rewards.reshape(len(prompt_ids), size)
  for p, r in zip(prompt_ids, got):
    np.testing.assert_array_equal(r, np.asarray(expected[tuple(p)], float))
  assert {tuple(p) for p in prompt_ids} == set(expected)


def test_verifier_never_judges_a_question_it_trained_on(base_model, tmp_path, monkeypatch):
  """`:verifier`'s shape: the band (p_hat 0.8-0.9) lies inside the confident votes (>= 0.8) the
  Verifier trains on. Cross-fitted, each fold's Verifier starts from the stage's start, trains
  only on the other fold's questions and judges only its own: every band answer is judged once,
  never by a Verifier that had its question among its targets."""
  c = demo.get_config("verifier_smoke")
  c.model_path = base_model
  run = _run(c, tmp_path)
  m = c.dataset.votes
  shares = [1.0, 0.9, 0.8, 1.0, 0.9, 0.8, 1.0, 0.9, 0.5, 0.8]  # question 8: not confident
  questions = [f"What is {q} + 1?" for q in range(len(shares))]
  members, votes, answers, texts = [], [], [], []
  for q, share in enumerate(shares):
    right = round(share * m)
    members.append([0] * right + [1] * (m - right))
    groups = [(str(q + 1), right)] + ([("0", m - right)] if right < m else [])
    votes.append(Vote(str(q + 1), share, groups))
    answers.append([g for g, n in groups for _ in range(n)])
    texts.append([f"step {a}: \\boxed{{{x}}}" for a, x in enumerate(answers[-1])])
  band = [1, 2, 4, 5, 7, 8, 9]
  pair_of = {}
  for q in range(len(questions)):
    for a in range(m):
      ids = encode_chat(run.tokenizer, verifier_lib.verifier_messages(questions[q], texts[q][a]))
      pair_of[tuple(ids)] = (q, a)
  start = jax.tree.map(np.asarray, run.verifier.state.params)
  events = []

  def fake_step(iteration, step, targets, prompt):
    params = jax.tree.leaves(run.verifier.state.params)
    at_start = all(np.array_equal(np.asarray(x), y) for x, y in zip(params, jax.tree.leaves(start)))
    events.append(("train", step, {t.question for t in targets}, at_start))
    moved = jax.tree.map(lambda x: x + 1.0, run.verifier.state.params)
    run.verifier.state = run.verifier.state.replace(params=moved)
    return {"loss": 0.0}

  def fake_judge(prompt_ids):
    events.append(("judge", [pair_of[tuple(p)] for p in prompt_ids]))
    return np.full(len(prompt_ids), 0.9)

  stage = run.verifier_stage
  monkeypatch.setattr(stage, "step", fake_step)
  monkeypatch.setattr(stage, "judge", fake_judge)
  ballot = SolverVotes(questions, votes, answers, texts, members)
  kept, stats = stage.verify_labels(0, ballot, band)
  steps = c.verifier.steps
  trains = [e for e in events if e[0] == "train"]
  judges = [e[1] for e in events if e[0] == "judge"]
  assert len(trains) == 2 * steps and len(judges) == 2
  assert [e[1] for e in trains] == list(range(2 * steps))  # distinct seeds and TensorBoard steps
  assert trains[0][3] and trains[steps][3]  # each fold starts from the stage's start
  judged_by = []
  for fold in range(2):
    trained_on = set().union(*(e[2] for e in trains[fold * steps : (fold + 1) * steps]))
    judged = {q for q, _ in judges[fold]}  # the band's answers and the check targets
    assert trained_on and judged and not judged & trained_on, (fold, trained_on, judged)
    judged_by.append({p for p in judges[fold] if p[0] in band})
  assert not judged_by[0] & judged_by[1]  # each band answer by one fold's Verifier
  assert sorted(judged_by[0] | judged_by[1]) == [(q, a) for q in band for a in range(m)]
  assert stats["verifier_targets"] == sum(m for s in shares if s >= 0.8)
  assert len(kept) + stats["verifier_dropped"] == len(band)
