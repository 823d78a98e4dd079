"""Every error a user can cause, and its exit code, in one place.

The library raises these with a message that names the input and how to fix it; `cli.main`
prints that one line on stderr and exits with the class's code. Anything else is a bug:
exit 1 with a one-line summary (set CATCLI_DEBUG=1 for the traceback).
"""

from __future__ import annotations


class CatError(Exception):
    """Base class: a failure the user can act on. Exit code 1 (runtime)."""

    exit_code = 1


class UsageError(CatError):
    """Bad flags, strategy strings, k lists, recipes or output directories. Exit code 2."""

    exit_code = 2


class DataError(CatError):
    """Missing, unreadable or malformed data, or a filter that leaves nothing. Exit code 3."""

    exit_code = 3


class ModelError(CatError):
    """A model or adapter that cannot be found or loaded. Exit code 4."""

    exit_code = 4


class RewardError(CatError):
    """A --reward that cannot be loaded (unknown name, missing file, import error, missing or
    uncallable function, unusable reward model) or bad --reward-weights. Exit code 2, as for
    other usage errors: it is raised before anything is written."""

    exit_code = 2


class RewardFailure(RewardError):
    """A loaded reward that raised, or returned other than one finite number or None per
    completion, while scoring. Exit code 1 (runtime): the problems finished before it stay saved."""

    exit_code = 1


EXIT_INTERRUPTED = 130
