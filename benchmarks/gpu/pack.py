"""Pack big trace files into xz parts small enough to come back from the GPU machine.

    python3 pack.py OUTDIR STEM FILE...   ->  OUTDIR/STEM.<n>.<file name>.xz.partNN

Each file is cut into slices compressed in parallel as separate xz streams; ``xz -d`` (and
Python's ``lzma``) read concatenated streams, so ``cat parts | xz -d`` restores the file.
"""

from __future__ import annotations

import lzma
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SLICE = 32 << 20
PART = 15 << 20


def _compress(args: tuple[str, int]) -> bytes:
    path, offset = args
    with open(path, "rb") as f:
        f.seek(offset)
        return lzma.compress(f.read(SLICE), preset=3)


def pack(out: Path, stem: str, files: list[Path]) -> None:
    with ProcessPoolExecutor() as pool:
        for n, path in enumerate(files):
            size = path.stat().st_size
            blob = b"".join(pool.map(_compress, [(str(path), o) for o in range(0, size, SLICE)]))
            for i in range(0, len(blob), PART):
                (out / f"{stem}.{n}.{path.name}.xz.part{i // PART:02d}").write_bytes(blob[i:i + PART])
            print(f"{path.name}: {size} bytes -> {len(blob)} xz bytes")


if __name__ == "__main__":
    pack(Path(sys.argv[1]), sys.argv[2], [Path(p) for p in sys.argv[3:]])
