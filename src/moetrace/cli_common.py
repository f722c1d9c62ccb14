"""What every command shares: the one-line bad-input error (exit code 2) and the
results-directory option."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from .errors import MoetraceError
from .results.store import DEFAULT_DIR, ENV_DIR

__all__ = ["BadInput", "bad_input", "results_option"]


class BadInput(click.ClickException):
    """Bad input: one line on stderr, exit code 2, never a traceback."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"moetrace: error: {self.message}", err=True)


def bad_input(fn: Callable) -> Callable:
    """Known input errors (ValueError covers unknown models, malformed configs, missing
    results) become one line and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except (MoetraceError, ValueError, OSError) as e:
            raise BadInput(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    return wrapper


results_option = click.option("--results", "-r", envvar=ENV_DIR, default=DEFAULT_DIR, show_default=True,
                              help=f"results directory (or ${ENV_DIR})")
