#!/usr/bin/env python3
"""MiniMax-M2 (MiniMaxAI/MiniMax-M2, native fp8). Edit CONFIGS; options as `moetrace run --help`."""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))  # noqa: E401,E702
from moetrace.cli import script_main  # noqa: E402

CONFIGS = [  # (tp, ep, [MoE backends]); a backend may be (quant, backend, fallback_quant, fallback_backend)
    (1, 1, ["auto", "triton"]),
    (2, 1, ["auto", "triton"]),
    (8, 2, ["auto", "triton"]),
]

if __name__ == "__main__":
    script_main("MiniMax-M2", CONFIGS)
