"""How every console script ends: one line per error, stable exit codes.

* ``0`` — success (also when the reader of stdout went away: ``medvlsm-data list | head``);
* ``1`` — something failed that is not the user's input (an internal error), or some inputs of
  a batch failed (``medvlsm-predict``);
* ``2`` — an expected user error: a bad argument, a missing or corrupt file, a bad config key,
  a workdir in use, no restorable checkpoint... The line names the file, key or dataset and
  what to do.

A full traceback is printed only with ``--verbose`` or ``MEDVLSM_VERBOSE=1``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence

VERBOSE_ENV = "MEDVLSM_VERBOSE"
#: Errors of the user's input or environment (the project's own errors derive from ValueError
#: or RuntimeError; OSError covers missing, unreadable and read-only files, a full disk).
EXPECTED = (OSError, ValueError, KeyError, RuntimeError, FloatingPointError)


def verbose(argv: Sequence[str] | None = None) -> bool:
    """``--verbose`` among the arguments, or ``MEDVLSM_VERBOSE`` set to anything but 0/empty."""
    argv = sys.argv[1:] if argv is None else argv
    return os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0") or "--verbose" in argv


def message(err: BaseException) -> str:
    """The error's message (a KeyError's without its quotes). It is one line, except where the
    message itself lists several problems (dataset sources, weight conversion)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str) else str(err)
    return text.strip() or type(err).__name__


def _stdout_gone() -> None:
    """Python's recipe for a closed pipe: point stdout at devnull so the final flush succeeds."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def guard(prog: str, fn: Callable[[], int | None], argv: Sequence[str] | None = None) -> int:
    """Runs ``fn`` and turns what it raises into one line on stderr and an exit code."""
    try:
        code = fn()
        sys.stdout.flush()
        return int(code or 0)
    except BrokenPipeError:
        _stdout_gone()
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED as err:
        if verbose(argv):
            traceback.print_exc()
        print(f"{prog}: error: {message(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001
        if verbose(argv):
            traceback.print_exc()
        print(f"{prog}: internal error: {type(err).__name__}: {message(err)} (rerun with --verbose or "
              f"{VERBOSE_ENV}=1 for the traceback, and please report it)", file=sys.stderr)
        return 1


def add_verbose(parser) -> None:
    """The ``--verbose`` option of an argparse CLI."""
    parser.add_argument("--verbose", action="store_true",
                        help=f"print the full traceback of an error (or set {VERBOSE_ENV}=1)")
