"""Run checkpoints with orbax: pytrees (train states, params) plus a JSON record of loop position."""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class RunCheckpointer:
  """Saves and restores named pytrees and one JSON `meta` item per step.

  Orbax writes each step to a temporary directory and renames it when complete, so a killed run
  never leaves a checkpoint that looks finished. Every process must call `save` (multi-host).
  """

  def __init__(self, directory: str, item_names: tuple[str, ...], *, max_to_keep: int = 2):
    self._items = item_names
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        item_names=(*item_names, "meta"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, trees: dict[str, Any], meta: dict[str, Any]) -> None:
    args = {name: ocp.args.StandardSave(trees[name]) for name in self._items}
    self._manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **args))
    self._manager.wait_until_finished()

  def restore(self, step: int, templates: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restores onto the shardings and dtypes of `templates` (trees shaped like the saved ones)."""
    args = {name: ocp.args.StandardRestore(templates[name]) for name in self._items}
    out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **args))
    return {name: out[name] for name in self._items}, dict(out["meta"])

  def restore_meta(self, step: int) -> dict[str, Any]:
    """Only the JSON loop position of a step."""
    out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])

  def close(self) -> None:
    self._manager.close()
