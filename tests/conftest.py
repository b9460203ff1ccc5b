"""Test setup: 8 simulated CPU devices (for sharding tests) and shared tiny HF checkpoints."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from tests.support import hf_fixtures  # noqa: E402


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory):
  """A tiny random Qwen3 saved by transformers (float32, tied embeddings)."""
  return hf_fixtures.save_tiny_model(tmp_path_factory.mktemp("qwen3"), "qwen3")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  """PyTorch is only the test-time reference and is installed on Python < 3.12 only (PyPI serves
  just the multi-GB CUDA build for newer Pythons): a test that needs it is skipped without it."""
  outcome = yield
  report = outcome.get_result()
  exc = call.excinfo
  if exc is not None and exc.errisinstance(ModuleNotFoundError) and exc.value.name == "torch":
    report.outcome = "skipped"
    report.longrepr = (
        str(item.path),
        item.location[1] or 0,
        "Skipped: needs PyTorch (the test reference), not installed",
    )
