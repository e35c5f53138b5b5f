"""Command-line plumbing shared by ``launch/`` and ``experiments/``: user errors as one line with exit code 2.

No flag is defined here (each entry point defines its own); this module only holds what every entry point does the
same way: the error type, how it is reported, absl parsing that reports its errors that way, and the ``--mesh`` value.
Kept free of JAX so a bad command line fails in well under a second.
"""

from __future__ import annotations

import sys
from typing import NoReturn, Sequence

from absl import flags


class UsageError(ValueError):
    """A bad command line (unknown or contradictory flag, bad value, missing path); one line, exit code 2."""


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(program: str, args: Sequence[str]) -> list[str]:
    """absl-parses ``args`` (the arguments after the program name); a parse error or a positional argument ends the
    program through ``fail``. Returns absl's remaining argv (the program name)."""
    try:
        remaining = flags.FLAGS([program, *args])
    except flags.Error as e:
        fail(str(e).splitlines()[0])
    if len(remaining) > 1:
        fail(f"unexpected positional arguments {remaining[1:]}")
    return remaining


def parse_mesh(value: str | None) -> tuple[int, int, int] | None:
    """``--mesh 'data,fsdp,tensor'`` → (data, fsdp, tensor); None when the flag is unset (one device)."""
    if value is None:
        return None
    try:
        shape = tuple(int(x) for x in value.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"--mesh {value!r}: expected three positive integers 'data,fsdp,tensor'")
    return shape
