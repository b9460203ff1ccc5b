"""What the command-line tools share: one-line errors with exit status 2, absl flag parsing that
reports that way, and the start of every tool's main()."""

from __future__ import annotations

import sys
from typing import NoReturn

from absl import flags, logging


def fail(error: BaseException | str) -> NoReturn:
  """Prints ``error: <message>`` on stderr, its lines joined into one, and exits with status 2."""
  print(f"error: {' '.join(str(error).split()) or type(error).__name__}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing (``app.run(main, flags_parser=cli.parse_flags)``) whose errors are one line
  and exit 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (pass --helpfull to see every flag)")


def start(argv: list[str]) -> None:
  """The start of a tool's main(): no positional arguments (else `fail`), and library INFO logs
  (orbax, jax) kept off the console unless --verbosity is given."""
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
