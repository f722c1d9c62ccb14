#!/usr/bin/env python3
"""GLM-4.6 (zai-org/GLM-4.6, native bf16). Edit CONFIGS; options as `moetrace run --help`."""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))  # noqa: E401,E702
from moetrace.cli import script_main  # noqa: E402

CONFIGS = [  # (tp, ep, [MoE backends]); a backend may be (quant, backend, fallback_quant, fallback_backend)
    (8, 2, ["auto", "triton"]),
]

if __name__ == "__main__":
    script_main("GLM-4.6", CONFIGS)
