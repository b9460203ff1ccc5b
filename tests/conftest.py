"""Test setup: 8 simulated CPU devices (for sharding tests) and shared tiny HF checkpoints."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from tests import hf_fixtures  # noqa: E402


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory):
  """A tiny random Qwen3 saved by transformers (float32, tied embeddings)."""
  return hf_fixtures.save_tiny_model(tmp_path_factory.mktemp("qwen3"), "qwen3")
