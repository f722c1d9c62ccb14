"""Shared fixtures. Engine fixtures (a real vLLM CPU server) live in tests/engine_fixtures.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@pytest.fixture
def store(tmp_path):
    from moetrace.results.store import ResultsStore
    warnings: list[str] = []
    s = ResultsStore(tmp_path / "results", warn=warnings.append)
    s.warnings = warnings  # type: ignore[attr-defined]
    return s


def pytest_report_header(config):
    return [f"python: {sys.executable}"]
