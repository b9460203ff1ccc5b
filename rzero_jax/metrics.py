"""Metrics (TensorBoard via tensorboardX, optionally Weights & Biases; written by process 0 only)
and console progress."""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping
import warnings

import numpy as np


def start_wandb(
    project: str, *, config: Mapping[str, Any] | None = None, directory: str | None = None
) -> Any:
  """A Weights & Biases run in `project`, or None (with a one-line warning) when the `wandb`
  package is missing or the run cannot start. Nothing else depends on it."""
  try:
    import wandb
  except ImportError:
    warnings.warn(
        f"config.wandb_project={project!r} is set but the wandb package is not "
        "installed (pip install wandb); logging to TensorBoard only.",
        stacklevel=2,
    )
    return None
  try:
    return wandb.init(project=project, config=dict(config or {}), dir=directory, resume="allow")
  except Exception as e:  # no login, no network: TensorBoard still gets everything
    warnings.warn(
        f"wandb.init(project={project!r}) failed ({type(e).__name__}: {e}); logging to "
        "TensorBoard only.",
        stacklevel=2,
    )
    return None


class MetricWriter:
  """Scalars and histograms to TensorBoard, and to Weights & Biases when `wandb_project` is set
  (off by default); a no-op on processes other than the main one."""

  def __init__(
      self,
      logdir: str,
      *,
      enabled: bool = True,
      wandb_project: str = "",
      wandb_config: Mapping[str, Any] | None = None,
  ):
    self._writer = self._wandb = None
    if enabled:
      from tensorboardX import SummaryWriter

      self._writer = SummaryWriter(logdir)
      if wandb_project:
        self._wandb = start_wandb(wandb_project, config=wandb_config, directory=logdir)

  def scalars(self, step: int, values: Mapping[str, Any]) -> None:
    if self._writer is None:
      return
    finite = {
        name: float(value)
        for name, value in values.items()
        if value is not None and np.isfinite(value)
    }
    for name, value in finite.items():
      self._writer.add_scalar(name, value, step)
    if self._wandb is not None and finite:
      self._wandb.log(finite, step=step)

  def histogram(self, step: int, name: str, values: Any) -> None:
    values = np.asarray(values, np.float64)
    if self._writer is not None and values.size:
      self._writer.add_histogram(name, values, step)
      if self._wandb is not None:
        import wandb

        self._wandb.log({name: wandb.Histogram(values)}, step=step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
    if self._wandb is not None:
      self._wandb.finish()


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return (
      f"{seconds // 60}:{seconds % 60:02d}"
      if seconds < 3600
      else f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
  )


class Progress:
  """A line-per-update progress report with rate and ETA (safe for logs and notebooks), e.g.
  "solver step 3/10 [0:12<0:28, 0.25/s] loss=0.5": the training loops' steps, evaluation's
  finished completions. With `min_interval_s` a line is printed at most that often (and always
  when the count reaches `total`): for frequent small updates."""

  def __init__(
      self,
      label: str,
      total: int,
      *,
      start: int = 0,
      enabled: bool = True,
      stream: Any = None,
      min_interval_s: float = 0.0,
  ):
    self.label, self.total, self.done = label, total, start
    self._start_done, self._t0 = start, time.perf_counter()
    self._enabled = enabled
    self._stream = stream or sys.stdout
    self._min_interval_s, self._last_print = min_interval_s, -float("inf")

  def update(self, n: int = 1, **info: Any) -> None:
    self.done += n
    if not self._enabled:
      return
    now = time.perf_counter()
    if now - self._last_print < self._min_interval_s and self.done < self.total:
      return
    self._last_print = now
    elapsed = now - self._t0
    rate = (self.done - self._start_done) / max(elapsed, 1e-9)
    eta = (self.total - self.done) / rate if rate > 0 else float("inf")
    extras = " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
    )
    eta_text = _clock(eta) if np.isfinite(eta) else "?"
    print(
        f"{self.label} {self.done}/{self.total} [{_clock(elapsed)}<{eta_text}, "
        f"{rate:.2f}/s] {extras}".rstrip(),
        file=self._stream,
        flush=True,
    )
