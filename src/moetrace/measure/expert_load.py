"""Expert load: how the tokens of one request were routed, per layer, expert, stage and EP rank.

The engine's own recorder does the counting (SGLang's expert distribution recorder,
``engines/sglang.py``); this module reads what it wrote and turns it into the record's
``expert_load``. Pure functions over bytes and arrays:

- ``read_torch_save(data)``: the objects of a ``torch.save`` file without torch. The format is
  PyTorch's zip serialization (``torch/serialization.py``: ``<name>/data.pkl``, a protocol-2 pickle
  whose tensors are ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` calls
  and whose storages are persistent ids ``("storage", torch.<Type>Storage, key, location, numel)``
  naming the raw little-endian bytes in ``<name>/data/<key>``). Only those globals are accepted;
  anything else in the pickle is refused, so a file cannot run code here.
- ``summarize(counts, ...)``: ``counts[pass, layer, expert]`` (tokens routed to each logical expert
  in each forward pass) into per-stage tables: a pass of more than one token per sequence is a
  prefill ("extend") pass, the others decode steps.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TensorData", "read_torch_save", "routed_to_counts", "summarize", "check_planted"]

# torch.<Name>Storage -> numpy dtype (little-endian, as torch.save writes on every platform we meet)
_STORAGES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


@dataclass
class TensorData:
    """A tensor read from a torch.save file: its values as a numpy array, and where it lived."""

    array: np.ndarray
    location: str  # "cpu", "cuda:0", ...


@dataclass(frozen=True)
class _StorageType:
    dtype: str


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._zip, self._prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refused global {module}.{name} in a torch.save file")

    def persistent_load(self, pid: Any) -> Any:
        kind, stype, key, location, numel = pid
        if kind != "storage" or not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        raw = self._zip.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(raw, dtype=stype.dtype, count=numel), str(location)


def _rebuild_tensor(storage: tuple[np.ndarray, str], offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_: Any) -> TensorData:
    flat, location = storage
    if not size:
        return TensorData(flat[offset:offset + 1].reshape(()).copy(), location)
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(size), strides=tuple(s * item for s in stride),
                                           writeable=False)
    return TensorData(np.array(view), location)


def read_torch_save(data: bytes) -> Any:
    """The object a ``torch.save`` zip file holds, with tensors as ``TensorData``."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise ValueError("not a torch.save zip file: no data.pkl inside")
        prefix = pkl[0].rsplit("/", 1)[0] if "/" in pkl[0] else ""
        return _Unpickler(z.read(pkl[0]), z, prefix).load()


def routed_to_counts(routed: np.ndarray, prompt_tokens: int, experts: int) -> np.ndarray:
    """Per-token routing (vLLM's ``routed_experts``: [tokens - 1, layers, top_k] expert ids, every prompt token
    then every generated token but the last) as the counts :func:`summarize` reads: [pass, layer, expert], the
    prompt as one pass (its chunks are not told apart), each generated token as one. Every top-k slot counts, a
    repeated id too (vLLM's ``uniform_random`` routing simulator draws with replacement). A layer without experts
    is all zero for every token (vLLM clears its capture buffer every step and only routers write to it): it is
    left all zero here, not counted as expert 0."""
    routed = np.asarray(routed)
    if routed.ndim != 3 or routed.shape[0] < prompt_tokens:
        raise ValueError(f"routed experts must be [tokens - 1 >= {prompt_tokens} prompt tokens, layer, top_k], "
                         f"got shape {routed.shape}")
    if routed.size and int(routed.max()) >= experts:
        raise ValueError(f"expert id {int(routed.max())} out of range for {experts} experts")
    ids = routed.astype(np.int64)
    moe = np.flatnonzero(ids.any(axis=(0, 2)))  # the layers some token was routed in
    passes = np.concatenate([np.zeros(prompt_tokens, np.int64), np.arange(1, routed.shape[0] - prompt_tokens + 1)])
    counts = np.zeros((int(passes[-1]) + 1 if len(passes) else 0, routed.shape[1], experts), dtype=np.int64)
    t = np.arange(routed.shape[0])[:, None, None]
    np.add.at(counts, (passes[t], moe[None, :, None], ids[:, moe, :]), 1)
    return counts


def summarize(counts: np.ndarray, *, top_k: int, batch_size: int = 1, ep_size: int = 1,
              replicas: int = 1) -> dict[str, Any]:
    """Per stage (``extend``, ``decode``): passes, tokens, tokens per expert per MoE layer, the
    imbalance of each layer (the busiest expert's tokens over the mean expert's), and the tokens
    each EP rank's experts received (experts split evenly and in order over the EP ranks, SGLang's
    placement without redundant experts).

    ``counts[pass, layer, expert]`` as the recorder kept it; layers without experts (dense) are
    all zero and are left out, their indices kept in ``moe_layers``. ``replicas``: how many ranks
    routed each token. SGLang sums every rank's counts, and under tensor-parallel attention every
    rank of the TP group routes every token, so its counts are ``tp`` times the tokens (seen at TP2
    EP2 on two H200s: 9216 = 2 x (4096 + 512) tokens); they are divided back here, exactly."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 3:
        raise ValueError(f"expert counts must be [pass, layer, expert], got shape {counts.shape}")
    if replicas > 1:
        if (counts % replicas).any():
            raise ValueError(f"expert counts are not all multiples of {replicas} (the ranks said to route every token)")
        counts = counts // replicas
    moe_layers = [int(i) for i in np.flatnonzero(counts.sum(axis=(0, 2)))]
    per_pass_tokens = counts.sum(axis=2).max(axis=1) // max(top_k, 1)  # tokens of each pass
    out: dict[str, Any] = {"experts": int(counts.shape[2]), "top_k": top_k, "ep_size": ep_size, "replicas": replicas,
                           "layers": int(counts.shape[1]), "moe_layers": moe_layers, "stages": {}}
    extend = per_pass_tokens > batch_size
    for stage, mask in (("extend", extend), ("decode", ~extend & (per_pass_tokens > 0))):
        if not mask.any():
            continue
        c = counts[mask][:, moe_layers, :].sum(axis=0)  # [moe layer, expert]
        mean = c.sum(axis=1) / c.shape[1]
        imbalance = np.divide(c.max(axis=1), mean, out=np.zeros_like(mean, dtype=float), where=mean > 0)
        ranks = c.reshape(c.shape[0], ep_size, -1).sum(axis=2) if c.shape[1] % ep_size == 0 else None
        stage_out = {
            "passes": int(mask.sum()),
            "tokens": int(per_pass_tokens[mask].sum()),
            "tokens_per_expert": c.tolist(),
            "imbalance": [round(float(x), 4) for x in imbalance],
            "imbalance_max": round(float(imbalance.max()), 4),
            "hottest_expert": [int(x) for x in c.argmax(axis=1)],
        }
        if ranks is not None:
            rank_mean = ranks.sum(axis=1) / ep_size
            stage_out["ep_rank_tokens"] = ranks.tolist()
            stage_out["ep_rank_imbalance"] = round(float((ranks.max(axis=1) / np.maximum(rank_mean, 1e-12)).max()), 4)
        out["stages"][stage] = stage_out
    return out


def check_planted(summary: dict[str, Any], planted: dict[str, Any]) -> dict[str, Any]:
    """Compare a measurement with a router planted by ``moetrace tiny --hot-experts``: each hot
    expert must have received every token of every MoE layer in every stage, so the measured
    imbalance of each layer is experts / top_k. Returns {"ok": bool, "expected": ..., "found": ...}."""
    hot = list(planted.get("hot_experts") or [])
    expected = summary["experts"] / max(summary["top_k"], 1)
    found: dict[str, Any] = {}
    ok = bool(hot) and bool(summary["stages"])
    for stage, s in summary["stages"].items():
        c = np.asarray(s["tokens_per_expert"])
        every = bool((c[:, hot] == s["tokens"]).all())
        found[stage] = {"hot_get_every_token": every, "imbalance": s["imbalance"]}
        ok = ok and every and all(abs(x - expected) < 1e-6 * expected for x in s["imbalance"])
    return {"ok": ok, "hot_experts": hot, "expected_imbalance": expected, "found": found}
