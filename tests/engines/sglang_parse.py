"""Parse SGLang command lines with SGLang's own argument parser (run with .venv-sglang/bin/python).

Not a test module: tests/engines/test_sglang_cmdline.py runs it once for all commands.
Reads JSON ``{"argvs": [[arg, ...], ...]}`` on stdin (each argv is what follows
``-m sglang.launch_server``) and writes one JSON object on stdout::

    {"sglang_version": "...", "moe_runner_backend_choices": [...], "quantization_choices": [...],
     "results": [{"exit_code": 0, "stderr": "", "args": {dest: value, ...}}, ...]}

``exit_code`` is 0 when the parser accepted the argv, else argparse's exit status (2) with its
message in ``stderr``. The parser is built the way ``sglang.srt.server_args.prepare_server_args``
builds it for ``python -m sglang.launch_server``: ``ArgumentParser(prog="sglang serve")`` +
``ServerArgs.add_cli_args``. Only argparse runs: ``ServerArgs.__post_init__`` (which inspects the
GPU and the model) does not.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys


def _choices(parser: argparse.ArgumentParser, flag: str) -> list[str] | None:
    for action in parser._actions:
        if flag in action.option_strings:
            return list(action.choices) if action.choices is not None else None
    raise KeyError(flag)


def main() -> int:
    request = json.load(sys.stdin)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON answer only
        import sglang
        from sglang.srt.server_args import ServerArgs

        parser = argparse.ArgumentParser(prog="sglang serve")
        ServerArgs.add_cli_args(parser)
        results = []
        for argv in request["argvs"]:
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    ns = parser.parse_args(argv)
            except SystemExit as e:
                results.append({"exit_code": e.code if isinstance(e.code, int) else 1,
                                "stderr": err.getvalue(), "args": None})
                continue
            results.append({"exit_code": 0, "stderr": err.getvalue(), "args": vars(ns)})
    json.dump({"sglang_version": getattr(sglang, "__version__", None),
               "moe_runner_backend_choices": _choices(parser, "--moe-runner-backend"),
               "quantization_choices": _choices(parser, "--quantization"),
               "results": results}, out, default=repr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
