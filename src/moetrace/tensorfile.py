"""Tensors as bytes without torch: bf16 and float8-e4m3 codes from float32 arrays (numpy, or ml_dtypes
when installed), and safetensors files written and their headers read (an 8-byte header length, a
JSON header, raw little-endian data). ``tiny.py`` writes its checkpoints with these."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any, Iterable

__all__ = ["to_bf16_bits", "to_bf16_bits_numpy", "to_e4m3_bits", "to_e4m3_bits_numpy", "e4m3_to_float",
           "write_safetensors", "read_safetensors_header"]


def to_bf16_bits(x):
    """float32 array -> uint16 bf16 bit patterns, rounded to nearest even."""
    import numpy as np

    ml = _ml_dtypes()
    if ml is not None:  # the same rounding, in C (tests/test_tiny.py checks they agree)
        return np.ascontiguousarray(x, dtype=np.float32).astype(ml.bfloat16).view(np.uint16)
    return to_bf16_bits_numpy(x)


def to_bf16_bits_numpy(x):
    import numpy as np

    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def _ml_dtypes():
    """ml_dtypes when installed (numpy's bf16/fp8 casts in C, ~50x faster for real-width slices)."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes


def _e4m3_table():
    """The non-negative finite float8_e4m3fn values, indexed by code 0..126."""
    import numpy as np

    codes = np.arange(127)
    exp, man = codes >> 3, codes & 7
    sub = man / 8.0 * 2.0**-6
    norm = (1 + man / 8.0) * 2.0 ** (exp - 7)
    return np.where(exp == 0, sub, norm)


def to_e4m3_bits(x):
    """float32 array -> uint8 float8_e4m3fn codes (round to nearest, saturating at 448)."""
    import numpy as np

    ml = _ml_dtypes()
    if ml is None:
        return to_e4m3_bits_numpy(x)
    # saturate first: ml_dtypes turns values above 448 into NaN
    codes = np.clip(x, -448.0, 448.0).astype(np.float32).astype(ml.float8_e4m3fn).view(np.uint8)
    codes[codes == 0x80] = 0  # -0.0 is written as +0.0, like the numpy path
    return codes


def to_e4m3_bits_numpy(x):
    """The same in plain numpy (tests/test_tiny.py checks it against ml_dtypes)."""
    import numpy as np

    table = _e4m3_table()
    a = np.minimum(np.abs(x.astype(np.float64)), 448.0)
    hi = np.clip(np.searchsorted(table, a), 1, 126)
    lo = hi - 1
    code = np.where(np.abs(table[hi] - a) < np.abs(a - table[lo]), hi, lo).astype(np.uint8)
    return code | (np.signbit(x).astype(np.uint8) << np.uint8(7)) * (code > 0)


def e4m3_to_float(codes):
    import numpy as np

    table = np.append(_e4m3_table(), np.nan)
    mag = table[codes & 0x7F]
    return np.where(codes & 0x80, -mag, mag)


_DTYPES = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "I32": 4, "I64": 8, "F16": 2}


def write_safetensors(path: Path, tensors: Iterable[tuple[str, str, tuple[int, ...], bytes]], metadata: dict[str, str] | None = None) -> None:
    """Write ``(name, dtype, shape, raw little-endian bytes)`` tensors as one safetensors
    file, in the given order (so the bytes are reproducible)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    chunks, offset = [], 0
    for name, dtype, shape, data in tensors:
        n = _DTYPES[dtype] * math.prod(shape)
        if len(data) != n:
            raise ValueError(f"{name}: {len(data)} bytes for {dtype}{list(shape)}, want {n}")
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        chunks.append(data)
        offset += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))
