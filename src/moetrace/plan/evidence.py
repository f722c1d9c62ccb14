"""The planner's weight figures against what was really loaded (pure helpers, no engine).

Three references for the bytes of a checkpoint's weights on one GPU (TP1):

* the **planner**: :func:`predict_weights` (``weights_per_gpu`` over the config's inventory, in the
  checkpoint's storage dtype), the figure ``plan_config(..., engine="vllm")`` uses at TP1;
* the **safetensors headers**: :func:`safetensors_bytes` sums ``data_offsets`` of every tensor,
  an exact count of what is stored (no engine involved);
* the **engine's log**: :func:`parse_model_memory` reads the line in which vLLM states the model's
  memory. The GPU build says ``Model loading took 12.5 GiB memory and 3.2 seconds`` (measured with
  the device allocator around the load); vLLM's CPU build (0.32) prints no such line, and the only
  model-size figure in its log is ``... Checkpoint size: 0.01 GiB. Available RAM: 21.75 GiB.``
  (the bytes of the safetensors files it loads, ``%.2f GiB``). Both are rounded to 0.01 GiB, so
  a logged figure is only known to within 0.005 GiB (:attr:`LoggedMemory.resolution_bytes`).
  :func:`parse_kv_cache` reads the KV cache lines (``Auto set (1.78/8.46) GiB for KV cache`` /
  ``CPU KV cache size: 1,870,464 tokens``; GPU: ``Available KV cache memory: 30.5 GiB`` /
  ``GPU KV cache size: 123,456 tokens``), whose ratio is the engine's KV bytes per token.

:func:`compare_checkpoint` puts the three side by side for one checkpoint directory and one log;
:func:`format_comparison_table` prints rows of them. docs/planner-proof.md has the figures.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .arch import BF16, FP32, QuantFormat, build_arch, inventory, quant_format_for
from .memory import WeightsPerGPU, kv_bytes_per_token, weights_per_gpu

__all__ = ["Comparison", "LoggedKV", "LoggedMemory", "SafetensorsBytes", "checkpoint_dtype", "compare_checkpoint",
           "format_comparison_table", "parse_kv_cache", "parse_model_memory", "pct_error", "predict_weights",
           "safetensors_bytes"]

GIB = 2**30

# safetensors dtype -> bytes per element
ST_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                  "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1}
_ST_TO_NAME = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}
_DTYPE_BITS = {"bf16": 16, "fp16": 16, "fp32": 32, "bfloat16": 16, "float16": 16, "float32": 32}


def _resolution(number: str) -> float:
    """Half a unit of the last printed decimal, in GiB; vLLM rounds to 2 decimals at least
    (``format_gib`` = ``round(b / GiB, 2)``, so "12.5" is 12.50 +- 0.005)."""
    decimals = len(number.partition(".")[2])
    return 0.5 * 10 ** -max(decimals, 2)


# ----------------------------------------------------------------------------- engine logs

@dataclass(frozen=True)
class LoggedMemory:
    """The model's memory as an engine log states it."""
    kind: str              # "model_loading" (GPU: allocator delta around the load) | "checkpoint_size" (CPU: file bytes)
    gib: float
    resolution_gib: float  # the figure is gib +- this (rounding of the printed number)
    line: str

    @property
    def bytes(self) -> float:
        return self.gib * GIB

    @property
    def resolution_bytes(self) -> float:
        return self.resolution_gib * GIB


_MODEL_LOADING = re.compile(r"Model loading took (\d+(?:\.\d+)?) ?GiB(?: memory)? and")
# SGLang (0.5.17 on H200): "Load weight end. elapsed=1.92 s, type=..., avail mem=129.34 GB, mem usage=9.78 GB."
# SGLang's "GB" are GiB (it divides by 1 << 30: tests/data/gpu's KV lines give 2304.0 bytes a token for MLA).
_SGLANG_WEIGHTS = re.compile(r"Load weight end\..*?mem usage=(\d+(?:\.\d+)?) GB")
_MODEL_WEIGHTS_V0 = re.compile(r"Loading model weights took (\d+(?:\.\d+)?) ?GB")
_CHECKPOINT_SIZE = re.compile(r"Checkpoint size: (\d+(?:\.\d+)?) GiB")


def _line_of(text: str, m: re.Match[str]) -> str:
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    return text[start:end if end >= 0 else len(text)].strip()


def parse_model_memory(text: str) -> LoggedMemory | None:
    """The model memory an engine log states: vLLM's ``Model loading took X GiB memory`` (GPU
    builds; older ``Loading model weights took X GB``) or SGLang's ``Load weight end. ... mem
    usage=X GB`` (GiB, one line a rank) when present, else vLLM's CPU build's
    ``Checkpoint size: X GiB``; None when the log has neither (the server died before
    loading, or another engine). The last occurrence wins (a log of one server has one)."""
    for kind, rx in (("model_loading", _MODEL_LOADING), ("model_loading", _MODEL_WEIGHTS_V0),
                     ("model_loading", _SGLANG_WEIGHTS), ("checkpoint_size", _CHECKPOINT_SIZE)):
        found = list(rx.finditer(text))
        if found:
            m = found[-1]
            return LoggedMemory(kind, float(m.group(1)), _resolution(m.group(1)), _line_of(text, m))
    return None


@dataclass(frozen=True)
class LoggedKV:
    """The KV cache an engine log states: its size and how many tokens it holds."""
    gib: float
    tokens: int
    resolution_gib: float
    lines: tuple[str, ...]

    @property
    def bytes_per_token(self) -> float:
        return self.gib * GIB / self.tokens

    @property
    def bytes_per_token_range(self) -> tuple[float, float]:
        """What the rounding of the printed GiB allows (the token count is exact)."""
        return ((self.gib - self.resolution_gib) * GIB / self.tokens,
                (self.gib + self.resolution_gib) * GIB / self.tokens)


_KV_CPU = re.compile(r"(?:Auto|Explicitly) set \((\d+(?:\.\d+)?)/\d+(?:\.\d+)?\) GiB for KV cache")
_KV_GPU = re.compile(r"Available KV cache memory: (\d+(?:\.\d+)?) GiB")
_KV_TOKENS = re.compile(r"(?:CPU|GPU) KV cache size: ([\d,]+) tokens")


# SGLang: "KV Cache is allocated. dtype: torch.bfloat16, #tokens: 30366843, K size: 57.92 GB, V size: 57.92 GB"
# (MHA/GQA) or "... #tokens: 53106262, KV size: 113.95 GB" (MLA's one latent cache).
_KV_SGLANG = re.compile(r"KV Cache is allocated\..*?#tokens: (\d+), (?:KV size: (\d+(?:\.\d+)?) GB|"
                        r"K size: (\d+(?:\.\d+)?) GB, V size: (\d+(?:\.\d+)?) GB)")


def parse_kv_cache(text: str) -> LoggedKV | None:
    """KV cache size and token count from an engine log: vLLM (CPU: ``Auto set (X/Y) GiB for KV
    cache``; GPU: ``Available KV cache memory: X GiB``; both: ``... KV cache size: N tokens``) or
    SGLang (``KV Cache is allocated. ... #tokens: N, KV size: X GB`` or ``K size: X GB, V size: Y GB``)."""
    sgl = list(_KV_SGLANG.finditer(text))
    if sgl:
        m = sgl[-1]
        parts = [g for g in m.groups()[1:] if g is not None]
        gib = sum(float(g) for g in parts)
        return LoggedKV(gib, int(m.group(1)), sum(_resolution(g) for g in parts), (_line_of(text, m),)) \
            if gib > 0 and int(m.group(1)) > 0 else None
    size = list(_KV_CPU.finditer(text)) or list(_KV_GPU.finditer(text))
    tokens = list(_KV_TOKENS.finditer(text))
    if not size or not tokens:
        return None
    s, t = size[-1], tokens[-1]
    n = int(t.group(1).replace(",", ""))
    if n <= 0 or float(s.group(1)) <= 0:
        return None
    return LoggedKV(float(s.group(1)), n, _resolution(s.group(1)), (_line_of(text, s), _line_of(text, t)))


# ----------------------------------------------------------------------------- safetensors

@dataclass(frozen=True)
class SafetensorsBytes:
    """Exact byte counts of a checkpoint's safetensors files, from their headers."""
    tensor_bytes: int              # sum of every tensor's data
    file_bytes: int                # the files on disk (headers included): what vLLM's "Checkpoint size" sums
    by_dtype: dict[str, int]       # tensor bytes per safetensors dtype ("BF16", "F32", "F8_E4M3", ...)
    n_tensors: int
    files: tuple[str, ...] = field(default=())


def _read_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 2**20:
            raise ValueError(f"{path}: safetensors header of {n} bytes; not a safetensors file")
        return json.loads(f.read(n))


def safetensors_bytes(checkpoint: Path | str) -> SafetensorsBytes:
    """Sum the tensors of every ``*.safetensors`` file of a checkpoint directory (or one file)."""
    p = Path(checkpoint)
    files = [p] if p.is_file() else sorted(p.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {p}")
    total = 0
    by: dict[str, int] = {}
    n = 0
    for f in files:
        for name, meta in _read_header(f).items():
            if name == "__metadata__":
                continue
            a, b = meta["data_offsets"]
            want = ST_DTYPE_BYTES.get(meta["dtype"])
            if want is not None and want * math.prod(meta["shape"]) != b - a:
                raise ValueError(f"{f}: {name} has {b - a} bytes for {meta['dtype']}{meta['shape']}")
            total += b - a
            by[meta["dtype"]] = by.get(meta["dtype"], 0) + (b - a)
            n += 1
    return SafetensorsBytes(total, sum(f.stat().st_size for f in files), by, n, tuple(str(f) for f in files))


def checkpoint_dtype(st: SafetensorsBytes, hf_config: dict[str, Any] | None = None) -> str:
    """The storage dtype of a checkpoint's unquantized weights: the 16/32-bit float dtype holding
    most bytes (``bf16``, ``fp16``, ``fp32``), else the config's ``torch_dtype``, else ``bf16``."""
    floats = {k: v for k, v in st.by_dtype.items() if k in _ST_TO_NAME}
    if floats:
        return _ST_TO_NAME[max(floats, key=lambda k: floats[k])]
    td = str((hf_config or {}).get("torch_dtype") or (hf_config or {}).get("dtype") or "bfloat16")
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(td, "bf16")


# ----------------------------------------------------------------------------- predictions

def predict_weights(hf_config: dict[str, Any], *, tp: int = 1, ep: int = 1, engine: str = "vllm",
                    dtype: str | None = None, include_mtp: bool = False,
                    quantization: str | None = None) -> WeightsPerGPU:
    """The planner's weight bytes on one GPU for any HF config (e.g. a real config with
    ``num_hidden_layers`` cut to a few layers), exactly as ``plan_config`` computes them.

    ``dtype`` is the storage dtype of the unquantized weights: None or ``"bf16"``/``"fp16"``
    keep the planner's own (16-bit, with the router's ``e_score_correction_bias`` in FP32, as the
    real checkpoints store it); ``"fp32"`` makes every unquantized weight 4 bytes. Quantized
    weights follow the config's ``quantization_config`` (or ``quantization``, an engine's online
    ``--quantization``). ``engine="sglang"`` adds SGLang's MLA extras (``w_kc``/``w_vc``)."""
    a = build_arch(hf_config)
    scheme = quant_format_for(hf_config, quantization)
    from .planner import _planned_engine
    tensors = inventory(a, include_mtp=include_mtp, engine_extras=_planned_engine(engine).planner_load_extras)
    bits = _DTYPE_BITS.get(str(dtype).lower(), None) if dtype else None
    if dtype and bits is None:
        raise ValueError(f"dtype {dtype!r}: one of bf16, fp16, fp32")
    if bits == 32:
        scheme = _Unquantized(scheme, FP32)  # type: ignore[assignment]
    return weights_per_gpu(a, tensors, scheme, tp, ep)


class _Unquantized:
    """A quantization scheme whose unquantized weights are all stored in ``fmt``."""

    def __init__(self, inner: Any, fmt: QuantFormat) -> None:
        self.inner, self.fmt = inner, fmt

    def format_for(self, t: Any) -> QuantFormat:
        f = self.inner.format_for(t)
        return self.fmt if f in (BF16, FP32) else f


def pct_error(predicted: float, reference: float) -> float | None:
    """(predicted - reference) / reference, in percent; None without a positive reference."""
    if not reference or reference <= 0:
        return None
    return 100.0 * (predicted - reference) / reference


# ----------------------------------------------------------------------------- one checkpoint

@dataclass(frozen=True)
class Comparison:
    name: str
    model_type: str
    dtype: str                    # storage dtype of the unquantized weights
    predicted_bytes: float        # planner, TP1
    safetensors: SafetensorsBytes
    logged: LoggedMemory | None = None
    kv_predicted_bytes_per_token: int | None = None
    kv_logged: LoggedKV | None = None
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def error_vs_safetensors_pct(self) -> float | None:
        return pct_error(self.predicted_bytes, self.safetensors.tensor_bytes)

    @property
    def logged_reference_bytes(self) -> float | None:
        """What the logged figure should equal if the prediction is right: the prediction itself
        for ``Model loading took`` (memory of the weights), the prediction plus the files' headers
        for ``Checkpoint size`` (which sums file sizes)."""
        if self.logged is None:
            return None
        if self.logged.kind == "checkpoint_size":
            return self.predicted_bytes + (self.safetensors.file_bytes - self.safetensors.tensor_bytes)
        return self.predicted_bytes

    @property
    def error_vs_log_pct(self) -> float | None:
        if self.logged is None:
            return None
        return pct_error(self.predicted_bytes, self.logged.bytes)

    @property
    def log_agrees(self) -> bool | None:
        """Whether the logged figure is the prediction, to within the log's rounding."""
        ref = self.logged_reference_bytes
        if ref is None or self.logged is None:
            return None
        return abs(ref - self.logged.bytes) <= self.logged.resolution_bytes

    @property
    def kv_error_pct(self) -> float | None:
        if self.kv_logged is None or self.kv_predicted_bytes_per_token is None:
            return None
        return pct_error(self.kv_predicted_bytes_per_token, self.kv_logged.bytes_per_token)

    @property
    def kv_agrees(self) -> bool | None:
        if self.kv_logged is None or self.kv_predicted_bytes_per_token is None:
            return None
        lo, hi = self.kv_logged.bytes_per_token_range
        return lo <= self.kv_predicted_bytes_per_token <= hi

    def to_dict(self) -> dict[str, Any]:
        lg, kv = self.logged, self.kv_logged
        return {
            "name": self.name, "model_type": self.model_type, "dtype": self.dtype,
            "predicted_bytes": int(round(self.predicted_bytes)),
            "safetensors_tensor_bytes": self.safetensors.tensor_bytes,
            "safetensors_file_bytes": self.safetensors.file_bytes,
            "error_vs_safetensors_pct": self.error_vs_safetensors_pct,
            "logged": None if lg is None else {"kind": lg.kind, "gib": lg.gib, "resolution_gib": lg.resolution_gib,
                                               "line": lg.line},
            "error_vs_log_pct": self.error_vs_log_pct, "log_agrees": self.log_agrees,
            "kv_predicted_bytes_per_token": self.kv_predicted_bytes_per_token,
            "kv_logged": None if kv is None else {"gib": kv.gib, "tokens": kv.tokens,
                                                  "bytes_per_token": kv.bytes_per_token, "lines": list(kv.lines)},
            "kv_error_pct": self.kv_error_pct, "kv_agrees": self.kv_agrees,
            "parts": {k: int(round(v)) for k, v in self.parts.items()},
        }


def compare_checkpoint(checkpoint: Path | str, log_text: str | None = None, *, name: str | None = None,
                       tp: int = 1, engine: str = "vllm") -> Comparison:
    """Planner vs safetensors headers vs the engine log, for one checkpoint directory at TP1."""
    d = Path(checkpoint)
    cfg = json.loads((d / "config.json").read_text())
    st = safetensors_bytes(d)
    dt = checkpoint_dtype(st, cfg)
    w = predict_weights(cfg, tp=tp, engine=engine, dtype=dt)
    a = build_arch(cfg)
    if name is None:
        meta = d / "moetrace.json"
        name = json.loads(meta.read_text()).get("name", d.name) if meta.is_file() else d.name
    return Comparison(
        name=str(name), model_type=a.model_type, dtype=dt, predicted_bytes=w.total, safetensors=st,
        logged=parse_model_memory(log_text) if log_text else None,
        kv_predicted_bytes_per_token=kv_bytes_per_token(a, tp),
        kv_logged=parse_kv_cache(log_text) if log_text else None, parts=dict(w.parts),
    )


def _mib(b: float) -> str:
    return f"{b / 2**20:.3f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}%"


def _as_printed(b: float | None, resolution_gib: float) -> str:
    """``b`` rounded the way the log rounds the figure it is compared with."""
    if b is None:
        return "-"
    decimals = max(0, round(-math.log10(2 * resolution_gib)))
    return f"{round(b / GIB, decimals):.{decimals}f}"


def format_comparison_table(rows: Iterable[Comparison]) -> str:
    """GitHub markdown: predicted vs safetensors vs the log's figure, with errors. "planner as
    the log prints it" is the prediction (plus file headers for a checkpoint size) rounded as the
    log rounds: equal to the logged figure when the prediction is right to within that rounding."""
    out = ["| model | dtype | planner MiB | safetensors MiB (exact) | error | log states (GiB) | "
           "planner as the log prints it | planner vs log | KV B/token planner | KV B/token log | KV error |",
           "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lg = r.logged
        logged = "-" if lg is None else f"{lg.gib:g} ± {lg.resolution_gib:g} ({lg.kind.replace('_', ' ')})"
        printed = "-" if lg is None else _as_printed(r.logged_reference_bytes, lg.resolution_gib)
        agree = "" if r.log_agrees is None else (" ✓" if r.log_agrees else " ✗")
        kvp = "-" if r.kv_predicted_bytes_per_token is None else str(r.kv_predicted_bytes_per_token)
        kvl = "-" if r.kv_logged is None else f"{r.kv_logged.bytes_per_token:.1f}"
        kagree = "" if r.kv_agrees is None else (" ✓" if r.kv_agrees else " ✗")
        out.append(f"| {r.name} | {r.dtype} | {_mib(r.predicted_bytes)} | {_mib(r.safetensors.tensor_bytes)} | "
                   f"{_pct(r.error_vs_safetensors_pct)} | {logged} | {printed} | {_pct(r.error_vs_log_pct)}{agree} | "
                   f"{kvp} | {kvl} | {_pct(r.kv_error_pct)}{kagree} |")
    return "\n".join(out)
