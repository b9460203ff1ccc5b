"""R-Zero's repetition penalty: BLEU distances, average-linkage clusters, cluster share.

``bleu`` equals nltk's ``sentence_bleu([ref], hyp, smoothing_function=method1)`` with
uniform 4-gram weights: clipped n-gram precisions p_n (a zero numerator becomes
0.1 / denominator), brevity penalty exp(1 - r/h) when h <= r (0 for an empty
hypothesis), and 0 when no unigram matches.

``bleu_matrix`` computes it for all ordered pairs at once: n-grams are mapped to
integer ids with numpy, clipped matches sum_g min(c_i(g), c_j(g)) are counted as
sum over t >= 1 of L_t L_t^T with L_t[i, g] = [c_i(g) >= t], using dense BLAS for
n-grams shared by many questions and sparse products for the rest.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

_ORDER = 4
_EPSILON = 0.1
_DENSE_MIN_DF = 8
_DENSE_MAX_COLUMNS = 512


def bleu(hyp_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
  """Sentence BLEU of one hypothesis against one reference (nltk method1, 4-gram)."""
  log_sum = []
  for n in range(1, _ORDER + 1):
    hyp = Counter(zip(*(hyp_tokens[k:] for k in range(n))))
    ref = Counter(zip(*(ref_tokens[k:] for k in range(n))))
    matches = sum(min(c, ref[g]) for g, c in hyp.items())
    if n == 1 and matches == 0:
      return 0.0
    denominator = max(1, sum(hyp.values()))
    log_sum.append(math.log((matches or _EPSILON) / denominator) / _ORDER)
  h, r = len(hyp_tokens), len(ref_tokens)
  brevity = 1.0 if h > r else math.exp(1 - r / h)
  return brevity * math.exp(math.fsum(log_sum))


def _token_ids(sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Flat token ids, each position's sentence index, and its offset inside the sentence."""
  vocab: dict[str, int] = {}
  flat = np.fromiter(
      (vocab.setdefault(t, len(vocab)) for s in sentences for t in s), dtype=np.int64
  )
  lengths = np.array([len(s) for s in sentences], dtype=np.int64)
  doc = np.repeat(np.arange(len(sentences)), lengths)
  offset = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  return flat, doc, offset


def _ngram_ids(
    flat: np.ndarray,
    valid_prev: np.ndarray,
    prev: np.ndarray,
    lengths_per_pos: np.ndarray,
    offset: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Ids of the n-grams starting at each position (from the (n-1)-gram ids) and their mask."""
  if n == 1:
    return flat, np.ones(len(flat), dtype=bool)
  valid = valid_prev & (offset <= lengths_per_pos - n)
  following = np.zeros_like(flat)
  following[: max(0, len(flat) - n + 1)] = flat[n - 1 :]
  gram = np.full(len(flat), -1, dtype=np.int64)
  keys = prev[valid] * (flat.max(initial=0) + 1) + following[valid]
  gram[valid] = np.unique(keys, return_inverse=True)[1]
  return gram, valid


def _shared_matches(doc: np.ndarray, gram: np.ndarray, size: int) -> np.ndarray:
  """float32 matrix of sum_g min(c_i(g), c_j(g)) over the n-grams g found in >= 2 sentences.

  All count layers t go into one matrix of columns (g, t), so one product per order
  suffices: dense BLAS for columns shared by many sentences, sparse for the rest.
  """
  out = None
  width = int(gram.max(initial=0)) + 1
  pair, counts = np.unique(doc * width + gram, return_counts=True)
  rows, cols = pair // width, pair % width
  df = np.bincount(cols)
  keep = df[cols] >= 2
  if not keep.any():
    return np.zeros((size, size), dtype=np.float32)
  rows, cols, counts = rows[keep], cols[keep], counts[keep]
  layers = np.arange(1, int(counts.max(initial=0)) + 1)
  rows_t = np.concatenate([rows[counts >= t] for t in layers])
  cols_t = np.concatenate([cols[counts >= t] * len(layers) + t - 1 for t in layers])
  column_df = np.bincount(cols_t)
  ranked = np.sort(column_df[column_df > 0])[::-1]
  heavy = column_df[cols_t] > max(_DENSE_MIN_DF, ranked[min(len(ranked), _DENSE_MAX_COLUMNS) - 1])
  for part, dense in ((heavy, True), (~heavy, False)):
    if not part.any():
      continue
    _, col = np.unique(cols_t[part], return_inverse=True)
    mat = sp.csr_matrix(
        (np.ones(part.sum(), np.float32), (rows_t[part], col)), shape=(size, int(col.max()) + 1)
    )
    if dense:
      block = mat.toarray()
      out = block @ block.T
    else:
      product = (mat @ mat.T).tocoo()
      if out is None:
        out = np.zeros((size, size), dtype=np.float32)
      out[product.row, product.col] += product.data
  return out


def bleu_matrix(sentences: Sequence[Sequence[str]]) -> np.ndarray:
  """``M[i, j] = bleu(sentences[i], sentences[j])`` (row = hypothesis, column = reference).

  Computed as exp(log(prod_n max(m_n, 0.1)) / 4 - sum_n log(d_n) / 4 + log(brevity))
  in float64; it matches the per-pair formula to ~1e-15.
  """
  size = len(sentences)
  flat, doc, offset = _token_ids(sentences)
  lengths = np.array([len(s) for s in sentences], dtype=np.int64)
  product = np.ones((size, size))
  precision = np.empty((size, size))
  row_term = np.zeros(size)
  gram, valid = flat, np.ones(len(flat), dtype=bool)
  for n in range(1, _ORDER + 1):
    gram, valid = _ngram_ids(flat, valid, gram, lengths[doc], offset, n)
    matches = _shared_matches(doc[valid], gram[valid], size)
    np.fill_diagonal(matches, np.maximum(0, lengths - n + 1))
    if n == 1:
      no_unigram = matches == 0
    np.maximum(matches, np.float64(_EPSILON), out=precision)
    product *= precision
    row_term += np.log(np.maximum(1, lengths - n + 1))
  unique, index = np.unique(lengths, return_inverse=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    log_brevity = np.where(
        unique[:, None] > unique[None, :], 0.0, 1 - unique[None, :] / unique[:, None]
    )
  scores = np.log(product, out=product)
  scores -= row_term[:, None]
  scores /= _ORDER
  scores += log_brevity[index[:, None], index[None, :]]
  np.exp(scores, out=scores)
  np.minimum(scores, 1.0, out=scores)
  scores[no_unigram] = 0.0
  return scores


def cluster_questions(questions: Sequence[str], tau: float = 0.5) -> np.ndarray:
  """Flat cluster labels (1-based) of average-linkage clustering on BLEU distances.

  Distance ``d_ij = 1 - bleu(q_i.split(), q_j.split())`` for i < j, mirrored.
  Clusters merge while their distance is strictly below ``tau``: scipy's ``fcluster``
  keeps merges with height <= t, so t is the largest float below ``tau``.
  """
  size = len(questions)
  if size < 2:
    return np.ones(size, dtype=np.int32)
  condensed = 1.0 - squareform(bleu_matrix([q.split() for q in questions]), checks=False)
  tree = linkage(condensed, method="average")
  return fcluster(tree, np.nextafter(tau, -np.inf), criterion="distance")


def repetition_penalty(
    questions: Sequence[str], *, tau: float = 0.5, lam: float = 1.0
) -> np.ndarray:
  """``lam * |cluster of q_i| / B`` for each of the B questions (float64 array)."""
  labels = cluster_questions(questions, tau)
  if len(labels) == 0:
    return np.zeros(0)
  sizes = np.bincount(labels)
  return lam * sizes[labels] / len(labels)
