"""The engine's own account of its timing, from its Prometheus ``/metrics`` page.

vLLM serves ``vllm:time_to_first_token_seconds`` and ``vllm:inter_token_latency_seconds``
(older: ``vllm:time_per_output_token_seconds``); SGLang with ``--enable-metrics`` serves
``sglang:time_to_first_token_seconds`` and ``sglang:inter_token_latency_seconds`` (older:
``sglang:time_per_output_token_seconds``). Reading a histogram before and after a measured run,
the change of its sum over the change of its count is the server's mean over that run: the
server-side TTFT and ITL recorded beside the client's. Its buckets are too coarse for percentiles.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["histogram", "server_timing"]


def _value(line: str) -> float:
    rest = line[line.rindex("}") + 1:] if "}" in line else line.split(None, 1)[1]
    return float(rest.split()[0])  # a sample may carry a timestamp after its value


def histogram(text: str, name: str) -> tuple[float, float, list[tuple[float, float]]] | None:
    """(sum, count, cumulative buckets) of a Prometheus histogram, summed over its label sets;
    None when the page does not have it."""
    total = count = 0.0
    found = False
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name):]
        for suffix in ("_sum", "_count", "_bucket"):
            if rest.startswith(suffix) and rest[len(suffix):len(suffix) + 1] in ("{", " "):
                break
        else:
            continue
        found = True
        v = _value(line)
        if suffix == "_sum":
            total += v
        elif suffix == "_count":
            count += v
        else:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            key = float("inf") if le == "+Inf" else float(le)
            buckets[key] = buckets.get(key, 0.0) + v
    return (total, count, sorted(buckets.items())) if found else None


def _delta_mean(before: str, after: str, names: Sequence[str]) -> tuple[str, float, int] | None:
    for name in names:
        b, a = histogram(before, name), histogram(after, name)
        if a is None:
            continue
        s0, c0 = (b[0], b[1]) if b else (0.0, 0.0)
        n = a[1] - c0
        if n > 0:
            return name, (a[0] - s0) / n, int(n)
    return None


def server_timing(before: str | None, after: str | None, *, itl: Sequence[str], ttft: Sequence[str]) -> dict[str, Any]:
    """Run metrics from two reads of the engine's /metrics page around one measured run:
    ``server_itl_ms`` and ``server_ttft_ms`` (the means over the run) where the engine exposes
    them, and ``server_timing`` saying which histogram and how many samples, or why not."""
    if before is None or after is None:
        return {"server_timing": {"available": False, "reason": "no /metrics page"}}
    out: dict[str, Any] = {}
    info: dict[str, Any] = {"available": False}
    for key, names in (("itl", itl), ("ttft", ttft)):
        got = _delta_mean(before, after, names)
        if got is None:
            info[f"{key}_metric"] = None
            continue
        name, mean_s, n = got
        out[f"server_{key}_ms"] = mean_s * 1000
        info.update({f"{key}_metric": name, f"{key}_samples": n, "available": True})
    if not info["available"]:
        info["reason"] = f"no change in {', '.join([*itl, *ttft])}"
    out["server_timing"] = info
    return out
