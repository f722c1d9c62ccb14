"""Engine traces: the streaming analyzer (analyze.py) and its one category table (categories.py).

``capture.py`` (taking traces from a running engine) lives beside these and is written separately.
"""

from .analyze import (
    MultiSummary,
    OpStat,
    RankRow,
    StageGroup,
    StageSummary,
    StepStats,
    TraceError,
    TraceSummary,
    analyze_trace,
    analyze_traces,
    short_breakdown,
)
from .report import format_summary

__all__ = [
    "MultiSummary", "OpStat", "RankRow", "StageGroup", "StageSummary", "StepStats", "TraceError", "TraceSummary",
    "analyze_trace", "analyze_traces", "format_summary", "short_breakdown",
]
