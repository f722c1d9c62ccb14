"""--launches auto (issue 23 §3): launch until the ITL p50's 95% interval over launch means is within
--ci-target, at least 2 launches, at most --max-launches; the record says why it stopped."""

from __future__ import annotations

import pytest

from moetrace.measure.metrics import launches_verdict, relative_half_width
from moetrace.options import RUN_OPTIONS, RunOptions, node_flags
from tests.test_launch_phases import run


def _runs(per_launch: list[list[float]], key: str = "itl_p50_ms") -> dict[int, list[dict]]:
    return {1: [{"metrics": {key: v, "itl_ms": v}, "launch": n} for n, vs in enumerate(per_launch, 1) for v in vs]}


def test_the_verdict_waits_for_two_launches_then_the_interval_or_the_cap():
    assert launches_verdict(_runs([[3.0, 3.0]]), 1, target=0.05, cap=5) is None  # one launch: no interval
    tight = _runs([[3.00], [3.01], [3.02]])
    assert launches_verdict(tight, 3, target=0.05, cap=5).startswith("interval ")
    assert launches_verdict(tight, 3, target=0.05, cap=5).endswith("% <= 5%")
    wide = _runs([[3.0], [4.0]])  # t(0.975, 1) = 12.7: far from 5%
    assert launches_verdict(wide, 2, target=0.05, cap=5) is None
    why = launches_verdict(wide, 2, target=0.05, cap=2)
    assert why.startswith("cap 2 reached, interval ") and why.endswith("%")


def test_the_widest_batch_size_decides_and_a_bursty_run_counts_with_its_mean_itl():
    runs = _runs([[3.0], [3.01], [3.0]]) | {8: _runs([[3.0], [4.0], [3.5]])[1]}
    assert launches_verdict(runs, 3, target=0.05, cap=5) is None
    bursty = {1: [{"metrics": {"itl_ms": v}, "launch": n} for n, v in enumerate([3.0, 3.01, 3.0], 1)]}
    assert launches_verdict(bursty, 3, target=0.05, cap=5).startswith("interval ")
    assert relative_half_width([2.0, 4.0]) == pytest.approx(1 / 3) and relative_half_width(None) is None


def test_the_options_parse_and_travel_to_the_node():
    spec = {s.flags[0]: s for s in RUN_OPTIONS}
    assert spec["--launches"].parse("auto", {}) == "auto" and spec["--launches"].parse("3", {}) == 3
    with pytest.raises(ValueError, match="at least one launch"):
        spec["--launches"].parse("0", {})
    with pytest.raises(ValueError, match="or auto"):
        spec["--launches"].parse("many", {})
    with pytest.raises(ValueError, match="at least 2"):
        spec["--max-launches"].parse(1, {})
    with pytest.raises(ValueError, match="between 0 and 1"):
        spec["--ci-target"].parse(5.0, {})
    flags = node_flags(RunOptions(launches="auto", ci_target=0.02, max_launches=4))
    assert flags[flags.index("--launches") + 1] == "auto"
    assert flags[flags.index("--ci-target") + 1] == "0.02" and flags[flags.index("--max-launches") + 1] == "4"


def test_a_loose_target_stops_at_two_launches(tmp_path):
    rec = run(tmp_path, launches="auto", ci_target=0.99, max_launches=4, repeat=2)
    assert rec["workload"]["launches"] == 2 and rec["workload"]["launches_stopped"].endswith("% <= 99%")
    assert {r["launch"] for r in rec["runs"]} == {1, 2} and len(rec["phases"]["launches"]) == 2
    assert rec["metrics"]["ci_method"] == "t_launch_means"
    root = tmp_path / "results"
    adir = root / rec["attempt_dir"]
    assert rec["log_path"].endswith("/server.log") and (adir / "server-launch1.log").exists()
    assert not (adir / "server-launch2.log").exists()  # the last launch's log is the record's server.log


def test_an_unreachable_target_stops_at_the_cap(tmp_path):
    rec = run(tmp_path, launches="auto", ci_target=1e-9, max_launches=3, repeat=1)
    assert rec["workload"]["launches"] == 3
    assert rec["workload"]["launches_stopped"].startswith("cap 3 reached, interval ")
