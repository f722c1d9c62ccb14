"""GPU table and detection from nvidia-smi."""

from __future__ import annotations

import os
import stat

import pytest

from moetrace.plan import hardware
from moetrace.plan.hardware import GIB, GPUS, custom_gpu, detect_gpu, parse_nvidia_smi, resolve_gpu


def test_table_matches_engines_md():
    assert GPUS["h200"].memory_mib == 143771
    assert GPUS["h100"].memory_mib == 81559
    assert GPUS["h200"].hbm_bytes_per_s == 4.8e12 and GPUS["h100"].hbm_bytes_per_s == 3.35e12
    assert GPUS["b200"].hbm_bytes_per_s == 8e12
    for g in GPUS.values():
        assert g.fp8_flops == pytest.approx(2 * g.bf16_flops, rel=0.01)
        assert g.peak_flops("fp8") == g.fp8_flops and g.peak_flops("int4") == g.bf16_flops


@pytest.mark.parametrize("line,key", [
    ("NVIDIA H100 80GB HBM3, 81559 MiB", "h100"),
    ("NVIDIA H200, 143771 MiB\nNVIDIA H200, 143771 MiB", "h200"),
    ("NVIDIA B200, 183359 MiB", "b200"),
    ("NVIDIA H100 PCIe, 81559 MiB", None),
    ("NVIDIA H200 NVL, 143771 MiB", None),
    ("NVIDIA A100-SXM4-80GB, 81920 MiB", None),
    ("", None),
])
def test_parse_nvidia_smi(line, key):
    assert parse_nvidia_smi(line) == key


def test_detect_gpu_without_nvidia_smi(monkeypatch):
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    assert detect_gpu() is None


def test_detect_gpu_reads_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771 MiB'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert detect_gpu() == "h200"
    fake.write_text("#!/bin/sh\nexit 9\n")
    assert detect_gpu() is None


def test_custom_and_resolve():
    g = custom_gpu(memory_gib=96, hbm_tbps=4.0, bf16_tflops=800)
    assert g.memory_bytes == 96 * GIB and g.fp8_flops == 1600e12
    assert resolve_gpu(g) is g and resolve_gpu("H200") is GPUS["h200"]
    with pytest.raises(ValueError):
        resolve_gpu("a100")
    with pytest.raises(ValueError):
        custom_gpu(memory_gib=0, hbm_tbps=1, bf16_tflops=1)
