"""Trim GPU profiler traces for tests/data: keep what moetrace's analyzer reads, drop the rest.

    python3 benchmarks/gpu/trim.py TRACE.json.gz [...]      # in place; prints the sizes before and after

Kept: every device event (kernels, memcpys, memsets), the step annotations (``user_annotation``,
``gpu_user_annotation``), the host ops (``cpu_op``: they carry the External ids that tie a step's kernels to
it) with only the ``args`` the analyzer reads, and the metadata events (process and thread names, the
trace's header keys). Dropped: ``cuda_runtime`` / ``cuda_driver`` launches, ``python_function`` frames, flow
events (``ac2g``) and every other arg. The analyzer's summary of a trimmed trace equals the original's
(tests/gpu/test_gpu_evidence_4.py checks it on the kept files' own summaries in the records).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

KEEP_CATS = {"kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset", "user_annotation",
             "gpu_user_annotation", "cpu_op", "Operator"}
KEEP_ARGS = {"External id", "correlation", "device", "stream", "Record function id"}


def trim(trace: dict) -> dict:
    events = []
    for ev in trace.get("traceEvents", []):
        if not isinstance(ev, dict):
            continue
        if ev.get("ph") == "M":
            events.append(ev)
        elif ev.get("ph") == "X" and ev.get("cat") in KEEP_CATS:
            args = {k: v for k, v in (ev.get("args") or {}).items() if k in KEEP_ARGS}
            events.append({**{k: v for k, v in ev.items() if k != "args"}, **({"args": args} if args else {})})
    return {**{k: v for k, v in trace.items() if k != "traceEvents"}, "traceEvents": events}


def main(paths: list[str]) -> None:
    for p in map(Path, paths):
        before = p.stat().st_size
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt") as f:
            trace = json.load(f)
        out = trim(trace)
        with opener(p, "wt") as f:
            json.dump(out, f, separators=(",", ":"))
        print(f"{p}: {before / 1e6:.2f} -> {p.stat().st_size / 1e6:.2f} MB, "
              f"{len(trace['traceEvents'])} -> {len(out['traceEvents'])} events")


if __name__ == "__main__":
    main(sys.argv[1:])
