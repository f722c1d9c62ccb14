"""``python -m moetrace.traces TRACE...``: the analyzer without the rest of the CLI.

Prints the markdown summary (or ``--json``); exit status 2 with the reason when a file is unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys

from .analyze import DEFAULT_MAX_BYTES, TraceError, analyze_traces
from .report import format_summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m moetrace.traces", description="Where the time went in traces.")
    ap.add_argument("traces", nargs="+", help=".json or .json.gz trace files (several ranks of one config)")
    ap.add_argument("--top", type=int, default=15, help="kernels or ops listed per trace")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--max-gib", type=float, default=DEFAULT_MAX_BYTES / 2**30,
                    help="refuse a trace larger than this once decompressed")
    args = ap.parse_args(argv)
    try:
        m = analyze_traces(args.traces, top_n=args.top, max_bytes=int(args.max_gib * 2**30))
    except TraceError as e:
        print(f"moetrace: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(m.to_dict(), indent=1) if args.json else format_summary(m if len(m.traces) > 1 else m.traces[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
