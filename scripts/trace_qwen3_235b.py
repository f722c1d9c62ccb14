#!/usr/bin/env python3
"""Qwen3-235B trace (Qwen/Qwen3-235B-A22B, native bf16): the spec's per-model script.

Edit CONFIGS below: (tp, ep, [MoE backends]); a backend may also be
(quantization, backend, fallback_quantization, fallback_backend). Every option of
`moetrace run` works here, e.g.  python3 trace_qwen3_235b.py --dry-run   or   --repeat 3
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from moetrace.cli import script_main  # noqa: E402

CONFIGS = [
    (4, 1, ['auto', 'triton']),
    (8, 2, ['auto', 'triton']),
]

if __name__ == "__main__":
    script_main("Qwen3-235B", CONFIGS)
