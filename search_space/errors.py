"""Errors that carry a one-line message for the user, and the CLI wrapper that prints them.

Every user-facing failure in edgenas raises an ``EdgenasError`` subclass whose message is
one line naming the field (or path) and what is allowed.  ``cli_entry`` turns such an error
into ``error: <message>`` on stderr and exit status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from typing import Callable, Iterable


class EdgenasError(Exception):
    """Base class: a problem the user can fix, reported as one line."""


class ArchError(EdgenasError, ValueError):
    """An architecture value is malformed (bad channels, stride, block type, string...)."""


class SpaceError(EdgenasError, ValueError):
    """A search space file is malformed or an arch lies outside a space."""


class DataError(EdgenasError):
    """A data set is missing or malformed."""


class TargetError(EdgenasError):
    """A latency target is unknown, corrupt or cannot price something."""


def allowed(values: Iterable) -> str:
    """Format a list of allowed values for an error message."""
    return ", ".join(str(v) for v in values)


def field_error(cls: type[EdgenasError], field: str, got, allowed_values) -> EdgenasError:
    """Build the standard message: ``<field>: got <got>; allowed: <values>``."""
    if isinstance(allowed_values, str):
        return cls(f"{field}: got {got!r}; allowed: {allowed_values}")
    return cls(f"{field}: got {got!r}; allowed: {allowed(allowed_values)}")


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors (an unknown option, a missing or malformed value) raise one
    ``EdgenasError`` line -- ``cli_entry`` prints it as ``error: ...`` with exit status 2 -- instead of
    printing the whole usage text.  A malformed number says what is allowed.  ``add_subparsers`` makes
    its sub-parsers of the same class."""

    error_class: type | None = None  # None: EdgenasError; a subclass may narrow it

    def error(self, message):
        m = re.search(r"invalid (int|float) value", message)
        if m:
            message += "; allowed: " + ("a whole number" if m.group(1) == "int" else "a number")
        elif message.startswith("unrecognized arguments"):
            message += f"; see {self.prog} --help"
        raise (self.error_class or EdgenasError)(f"{self.prog}: {message}")


def one_line(exc: BaseException) -> str:
    """The user's message of ``exc``.  An error re-raised from a DataLoader worker (or another
    process) carries the worker's traceback ("Original Traceback ..."): keep its last line, the
    original message, without the ``module.Class: `` prefix."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [ln for ln in text.splitlines() if ln.strip()][-1].strip()
    head, sep, rest = last.partition(": ")
    if sep and " " not in head and head.split(".")[-1] == type(exc).__name__:
        return rest
    return last


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a CLI ``main``: user errors become one line on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
        except EdgenasError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        return 0 if rc is None else int(rc)

    return wrapper
