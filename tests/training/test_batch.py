"""The training batch format: layout, mini-batches, sequences that do not fit."""

import numpy as np
import pytest

from rzero_jax.training.batch import build_batch, split_minibatches


def test_build_batch_layout():
  batch = build_batch(
      [[5, 6], [7]],
      [[1, 2, 3], [4]],
      [[-0.1, -0.2, -0.3], [-0.4]],
      np.array([1.0, -1.0]),
      prompt_len=3,
      completion_len=4,
      pad_id=0,
  )
  np.testing.assert_array_equal(batch["tokens"], [[0, 5, 6, 1, 2, 3, 0], [0, 0, 7, 4, 0, 0, 0]])
  np.testing.assert_array_equal(
      batch["attention_mask"], [[0, 1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0, 0]]
  )
  np.testing.assert_array_equal(batch["loss_mask"], [[0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 0, 0, 0]])
  np.testing.assert_allclose(batch["old_logprobs"][0, 3:6], [-0.1, -0.2, -0.3])
  assert len(split_minibatches(batch, 1)) == 2
  with pytest.raises(ValueError, match="mini-batches"):
    split_minibatches(batch, 3)
  with pytest.raises(ValueError, match="does not fit"):
    build_batch(
        [[1, 2, 3, 4]], [[1]], [[0.0]], np.zeros(1), prompt_len=3, completion_len=4, pad_id=0
    )
