"""Lazy re-exports: a package names what its modules define without importing them up front."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(
    package: str, names_by_module: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
  """`__getattr__` and `__dir__` for `package`: each name of `names_by_module[module]` is imported
  from that submodule the first time it is read, and so is each submodule named there; then it is
  kept as an attribute of the package."""
  exports = {name: module for module, names in names_by_module.items() for name in names}
  names = sorted(exports)

  def __getattr__(name: str) -> Any:
    if name in names_by_module:
      value = importlib.import_module(f"{package}.{name}")
    elif name in exports:
      value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
    else:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    setattr(sys.modules[package], name, value)
    return value

  def __dir__() -> list[str]:
    return names

  return __getattr__, __dir__
