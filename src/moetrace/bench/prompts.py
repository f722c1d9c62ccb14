"""Random token-id prompts: seeded, reproducible, and never a prefix of each other
(each run draws fresh ids, so a prefix cache cannot serve a measured request)."""

from __future__ import annotations

import random

__all__ = ["random_prompts"]


def random_prompts(*, batch: int, input_len: int, vocab_size: int, seed: int) -> list[list[int]]:
    """``batch`` prompts of ``input_len`` token ids drawn uniformly from the ordinary part
    of the vocabulary (the first and last 1% hold special and rarely trained tokens)."""
    if batch < 1 or input_len < 1:
        raise ValueError("batch and input_len must be positive")
    lo = max(1, vocab_size // 100)
    hi = max(lo + 1, vocab_size - vocab_size // 100)
    rng = random.Random(seed)
    return [[rng.randrange(lo, hi) for _ in range(input_len)] for _ in range(batch)]
