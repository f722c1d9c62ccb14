"""Trim a real Kineto trace to its first N steps, keeping the writer's exact text.

    python tests/data/traces/trim.py SRC.trace.json.gz DST.trace.json.gz --steps 3

Keeps the header, metadata events, and every event that starts before the cut: host events
before the (N+1)-th step annotation starts, device events before the N-th device step span
(``gpu_user_annotation``) ends. Events are cut out of the original text (Kineto closes each
element of ``traceEvents`` with a newline, two spaces and ``}``) and written back unchanged, so
the fixture keeps the real layout the analyzer's fast path reads.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))
from moetrace.traces.names import step_stage  # noqa: E402

_END = "\n  }"
_DEVICE = {"kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation"}


def split_events(text: str) -> tuple[str, list[str], str]:
    """(text before the first event, each event's text, text after the last)."""
    start = text.index("[", text.index('"traceEvents"')) + 1
    head, events, pos = text[:start], [], start
    while True:
        brace = text.find("{", pos)
        close = text.find("]", pos)
        if brace < 0 or (0 <= close < brace):
            return head, events, text[pos:]
        end = text.index(_END, brace) + len(_END)
        json.loads(text[brace:end])  # each piece must be one whole event
        events.append(text[brace:end])
        pos = end


def cuts(events: list[dict], steps: int) -> tuple[float, float]:
    host = sorted(e["ts"] for e in events if e.get("cat") == "user_annotation" and step_stage(e.get("name", "")))
    dev = sorted(e["ts"] + e["dur"] for e in events
                 if e.get("cat") == "gpu_user_annotation" and step_stage(e.get("name", "")))
    host_cut = host[steps] if len(host) > steps else float("inf")
    dev_cut = dev[steps - 1] + 1.0 if len(dev) >= steps else float("inf")
    return host_cut, dev_cut


def trim(src: Path, dst: Path, steps: int) -> tuple[int, int]:
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt") as f:
        text = f.read()
    head, pieces, tail = split_events(text)
    events = [json.loads(p) for p in pieces]
    host_cut, dev_cut = cuts(events, steps)
    kept = [p for p, e in zip(pieces, events, strict=True)
            if "ts" not in e or e.get("ph") == "M"
            or e["ts"] < (dev_cut if e.get("cat") in _DEVICE else host_cut)]
    out = head + "\n" + ",\n".join(kept) + tail
    json.loads(out)
    with gzip.open(dst, "wt", compresslevel=9) as f:
        f.write(out)
    return len(events), len(kept)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--steps", type=int, required=True)
    a = ap.parse_args()
    n, k = trim(a.src, a.dst, a.steps)
    print(f"{a.dst.name}: kept {k} of {n} events, {a.dst.stat().st_size} bytes")
