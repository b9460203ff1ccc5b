"""Absolute Zero's actor on LoRA adapters (`config.actor.lora`, `experiments/azr_demo.py:lora`):
a tiny run end to end checkpoints only the adapters, resumes to the same summary and exports a
merged model; a bad rank fails with one line."""

import json
import os
import shutil

import numpy as np
import pytest

from experiments import azr_demo
from experiments.toy_code.build import ensure_base_model
from rzero_jax.azr.config import default_config
from rzero_jax.models import load_pretrained
from rzero_jax.rzero.config import default_config as rzero_default_config
from tests import support

TINY = [
    "--config=experiments/azr_demo.py:lora_smoke",
    "--config.actor.prompts_per_step=4",
    "--config.actor.train.micro_batch_size=24",
]


@pytest.fixture(scope="module")
def base_model():
  return ensure_base_model(support.CACHE)


def test_actor_lora_config_mirrors_rzero_roles():
  lora = default_config().actor.lora
  assert lora.rank == 0  # full fine-tuning by default (the paper)
  assert lora.to_dict() == rzero_default_config().solver.lora.to_dict()
  c = azr_demo.get_config("lora_smoke")
  assert c.actor.lora.rank == 16 and c.steps == azr_demo.get_config("smoke").steps
  with pytest.raises(ValueError, match=":lora_smoke"):
    azr_demo.get_config("no_such_variant")


def _adapter_keys(workdir, save):
  with open(os.path.join(workdir, "checkpoints", str(save), "actor", "_METADATA")) as f:
    keys = json.load(f)["tree_metadata"]
  return [k for k in keys if k.startswith("('params'")]


@pytest.mark.slow
def test_tiny_azr_lora_run_resumes_and_exports_a_merged_model(tmp_path, base_model):
  flags = [*TINY, f"--config.model_path={base_model}"]
  straight = tmp_path / "straight"
  code, out = support.run(straight, *flags, timeout=1200)
  assert code == 0, out
  summary = support.summary(straight)
  assert summary["config"]["actor"]["lora"]["rank"] == 16
  assert len(summary["steps"]) == 2 and set(summary["heldout_accuracy"]) == {"base", "step_2"}

  # Checkpoints hold the adapters (and their AdamW state), not the frozen base.
  saves = sorted(int(d) for d in os.listdir(straight / "checkpoints") if d.isdigit())
  keys = _adapter_keys(straight, saves[-1])
  assert keys and all("_lora_" in k for k in keys)

  # A run killed after step 1 (its last checkpoint gone) resumes to the same summary.
  killed = tmp_path / "killed"
  shutil.copytree(straight, killed)
  os.remove(killed / "summary.json")
  shutil.rmtree(killed / "export")
  shutil.rmtree(killed / "checkpoints" / str(saves[-1]))
  code, out = support.run(killed, *flags, timeout=1200)
  assert code == 0, out
  assert "resuming from checkpoint" in out and "step 1" in out
  assert support.summary(killed) == summary

  # The export is the merged model (no adapters), moved away from the base by the updates.
  _, base = load_pretrained(base_model, dtype="float32")
  _, merged = load_pretrained(str(straight / "export" / "final" / "actor"), dtype="float32")
  assert set(merged["layers"]) == set(base["layers"])
  assert any(not np.allclose(merged["layers"][k], base["layers"][k]) for k in ("q", "v", "down"))
  np.testing.assert_array_equal(merged["embed"], base["embed"])  # not a LoRA target


def test_negative_actor_lora_rank_fails_clearly(tmp_path, base_model):
  code, out = support.run(
      tmp_path / "w",
      *TINY,
      f"--config.model_path={base_model}",
      "--config.actor.lora.rank=-1",
  )
  assert code != 0
  assert "config.actor.lora.rank must be >= 0" in out
  assert "Traceback" not in out
  assert len(out.strip().splitlines()) <= 2
