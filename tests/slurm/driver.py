"""A stand-in for `moetrace sweep` with the executor options, for the tests until cli.py is
wired: the same calls in the same order as ``cli._execute``, with ``make_executor(kw)``
passed to ``run_sweep``. (Once `moetrace sweep --help` shows --executor, the tests use it.)"""

from __future__ import annotations

import sys

import click

from moetrace import cli
from moetrace.executors import make_executor
from moetrace.cli import executor_options

bad_input = getattr(cli, "bad_input", None) or getattr(cli, "_bad_input")


@click.command()
@click.argument("models", nargs=-1)
@cli.run_options
@executor_options
@bad_input
def main(models, **kw) -> None:
    from moetrace.sweep import plan_jobs, run_sweep
    opts = cli._options(kw)
    cli._check_values(opts)
    executor = make_executor(kw)
    targets = cli._targets(models, kw["config_names"], opts, kw)
    store = cli._store(kw["results"])
    jobs = plan_jobs(targets, opts, store, skip_succeeded=kw["skip_succeeded"], only_failed=kw["only_failed"])
    if executor is None:
        cli._check_engine(opts)  # with Slurm the engine lives on the nodes; their `moetrace run` checks it
    try:
        run_sweep(jobs, opts, store, executor=executor, extra_columns=tuple(kw["extra_columns"]))
    except KeyboardInterrupt:
        click.echo("moetrace: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
