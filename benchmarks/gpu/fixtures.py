"""Turn what the GPU sweep brought back into the test fixtures under tests/data/gpu/.

    python3 benchmarks/gpu/fixtures.py PACK_DIR [PACK_DIR ...] [--out tests/data/gpu]

Each PACK_DIR holds one step's ``<step>.tar.gz.NN`` pieces (benchmarks/gpu/sweep.py writes them into
``$OUT``; the device tool copies them back). The pieces are joined and extracted as they are: records,
views, server logs, traces and moetrace's output are kept byte for byte (nothing is trimmed: the GPU
traces of the slices are 1-200 KB each, 5 decode steps and one 4096-token prefill). Later steps'
results views replace earlier ones (each view is the store's state after that step).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tarfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("tests/data/gpu"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for d in sorted(a.packs, key=lambda p: min((f.stat().st_mtime for f in p.glob("*.tar.gz.*")), default=0)):
        for step in sorted({f.name.split(".tar.gz.")[0] for f in d.glob("*.tar.gz.*")}, key=_pack_order):
            data = b"".join(f.read_bytes() for f in sorted(d.glob(f"{step}.tar.gz.*")))
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
                names = t.getnames()
                t.extractall(a.out, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(a.out)
            print(f"{d}: {step}: {len(names)} files", file=sys.stderr)


def _pack_order(step: str) -> tuple:
    """The order a call wrote its packs in: ranks.py's ``<what>-HHMMSS-eN`` per finished entry (N counts up),
    then ``<what>-HHMMSS``, the call's last. A plain string sort put e10 before e9, so e9's older views
    replaced e10's newer ones (run 4's OOM directory lost its last failure entry that way)."""
    m = re.fullmatch(r"(.*?)-(\d{6})(?:-e(\d+))?", step)
    return (m[2], int(m[3]) if m[3] else 10**9, step) if m else ("", 0, step)


if __name__ == "__main__":
    main()
