"""Random token-id prompts: seeded, reproducible, and never a prefix of each other
(each run draws fresh ids, so a prefix cache cannot serve a measured request).

The seed alone repeats across attempts (every attempt numbers its runs the same way), so a
server that keeps its cache between attempts (``--base-url``, a failed flush) would serve a
later attempt's prompts from its cache. ``nonce``, drawn once per attempt and recorded with
its workload, makes each attempt's prompts its own while keeping them reproducible."""

from __future__ import annotations

import random

__all__ = ["random_prompts"]


def random_prompts(*, batch: int, input_len: int, vocab_size: int, seed: int, nonce: str = "") -> list[list[int]]:
    """``batch`` prompts of ``input_len`` token ids drawn uniformly from the ordinary part
    of the vocabulary (the first and last 1% hold special and rarely trained tokens)."""
    if batch < 1 or input_len < 1:
        raise ValueError("batch and input_len must be positive")
    lo = max(1, vocab_size // 100)
    hi = max(lo + 1, vocab_size - vocab_size // 100)
    rng = random.Random(f"{nonce}:{seed}" if nonce else seed)
    return [[rng.randrange(lo, hi) for _ in range(input_len)] for _ in range(batch)]
