"""GPU datasheet figures for planning and rooflines, and reading the GPU type from the machine.

Memory sizes are what ``nvidia-smi --query-gpu=memory.total`` reports (MiB), because that
is the number the engines start from (SGLang sizes its memory fraction from it). Bandwidth
and throughput are datasheet figures (dense, no sparsity), as listed in
docs/engines.md; NVLink figures are per direction per GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["GPU", "GPUS", "GIB", "MIB", "custom_gpu", "detect_gpu", "parse_nvidia_smi", "resolve_gpu"]

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class GPU:
    key: str                 # "h200", "h100", "b200", or "custom"
    label: str               # "H200 SXM"
    memory_bytes: int        # total device memory as nvidia-smi reports it
    hbm_bytes_per_s: float   # datasheet HBM bandwidth
    bf16_flops: float        # dense BF16 tensor-core peak
    fp8_flops: float         # dense FP8 tensor-core peak
    nvlink_bytes_per_s: float  # NVLink bandwidth per direction per GPU
    source: str = "datasheet"

    @property
    def memory_mib(self) -> int:
        return self.memory_bytes // MIB

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    def peak_flops(self, precision: str) -> float:
        """Peak dense throughput for a GEMM whose weights are in ``precision``.
        FP8 weights run FP8 GEMMs (block-wise W8A8 with dynamic activation scales);
        everything else (BF16, and INT4 weight-only, which dequantizes to BF16) runs BF16."""
        return self.fp8_flops if precision == "fp8" else self.bf16_flops

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


GPUS: dict[str, GPU] = {
    "h100": GPU("h100", "H100 SXM 80GB", 81559 * MIB, 3.35e12, 989e12, 1979e12, 450e9),
    "h200": GPU("h200", "H200 SXM", 143771 * MIB, 4.8e12, 989e12, 1979e12, 450e9),
    "b200": GPU("b200", "B200", 183359 * MIB, 8.0e12, 2250e12, 4500e12, 900e9),
}


def custom_gpu(memory_gib: float, hbm_tbps: float, bf16_tflops: float, fp8_tflops: float | None = None,
               nvlink_gbps: float = 450.0, label: str = "custom GPU") -> GPU:
    """A GPU from user figures (``--gpu custom``): memory in GiB, HBM in TB/s, peaks in TFLOP/s,
    NVLink in GB/s per direction. FP8 defaults to twice BF16 (as on Hopper and Blackwell)."""
    for name, v in (("memory_gib", memory_gib), ("hbm_tbps", hbm_tbps), ("bf16_tflops", bf16_tflops),
                    ("nvlink_gbps", nvlink_gbps)):
        if not v or v <= 0:
            raise ValueError(f"custom GPU: {name} must be positive, got {v!r}")
    fp8 = fp8_tflops if fp8_tflops and fp8_tflops > 0 else 2 * bf16_tflops
    return GPU("custom", label, int(memory_gib * GIB), hbm_tbps * 1e12, bf16_tflops * 1e12, fp8 * 1e12,
               nvlink_gbps * 1e9, source="user")


def resolve_gpu(gpu: "str | GPU") -> GPU:
    if isinstance(gpu, GPU):
        return gpu
    key = str(gpu).strip().lower()
    if key in GPUS:
        return GPUS[key]
    raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)} (or pass a custom GPU)")


def parse_nvidia_smi(text: str) -> str | None:
    """The GPU key from ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader`` output
    (first line), or None for a GPU without a table entry. Names seen: "NVIDIA H100 80GB HBM3, 81559 MiB",
    "NVIDIA H200, 143771 MiB", "NVIDIA B200, 183359 MiB"."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        name = line.split(",")[0].upper()
        if "H200" in name and "NVL" not in name:
            return "h200"
        if "H100" in name and "PCIE" not in name and "NVL" not in name:
            return "h100"   # SXM only: PCIe and NVL parts have other bandwidths and peaks
        if "B200" in name:
            return "b200"
        return None
    return None


def detect_gpu(timeout_s: float = 10.0) -> str | None:
    """The local GPU type via nvidia-smi, or None when there is no nvidia-smi, it fails, or
    the GPU has no table entry."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return parse_nvidia_smi(out.stdout)
