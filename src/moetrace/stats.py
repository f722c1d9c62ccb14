"""Small statistics shared by the measurement and the trace analyzer."""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted input."""
    if not sorted_values:
        raise ValueError("no values")
    k = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo))
