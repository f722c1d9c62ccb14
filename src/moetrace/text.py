"""Small helpers that several floors share: numbers read from JSON, percentages and clipped
text for tables and reports, and the end of a log file. Imports nothing of moetrace."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

__all__ = ["num", "pct", "clip", "tail"]


def num(v: Any, *, positive: bool = False) -> float | None:
    """A finite number (bools are not) as a float, else None; with ``positive``, also None
    for zero and below."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return None if positive and v <= 0 else float(v)


def pct(x: Any, digits: int = 0, *, none: str | None = None) -> str | None:
    """A fraction as a percentage ("42%"); ``none`` for what is not a number."""
    return f"{100 * x:.{digits}f}%" if isinstance(x, (int, float)) and not isinstance(x, bool) else none


def clip(text: str, n: int, *, mark: str = "…") -> str:
    """At most ``n`` characters, the cut marked."""
    return text if len(text) <= n else text[: max(1, n - len(mark))] + mark


def tail(path: str | os.PathLike[str] | None, max_bytes: int = 256_000) -> str:
    """The end of a (log) file as text ('' when missing or None)."""
    if path is None:
        return ""
    try:
        with open(Path(path), "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
