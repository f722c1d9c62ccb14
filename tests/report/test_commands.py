"""report and plot commands on SYNTHETIC records; bad input for all four."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from .browser import non_white_fraction
from .conftest import report_cli


def test_report_writes_into_the_results_directory_by_default(synthetic):
    cp = report_cli("report", "-r", str(synthetic))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == str(synthetic / "report.html")
    assert "<svg" in (synthetic / "report.html").read_text()


def test_results_from_the_environment(synthetic, tmp_path):
    out = tmp_path / "r.html"
    cp = report_cli("report", "--out", str(out), env={"MOETRACE_RESULTS_DIR": str(synthetic)})
    assert cp.returncode == 0, cp.stderr
    assert out.exists()


def test_plot_writes_png_and_svg(synthetic, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "fig"
    cp = report_cli("plot", "-r", str(synthetic), "-o", str(out))
    assert cp.returncode == 0, cp.stderr
    files = sorted(p.name for p in out.iterdir())
    assert "Qwen3-235B__bs1_in4096_out512__metrics.png" in files
    assert "Qwen3-235B__bs1_in4096_out512__efficiency.svg" in files
    assert "Qwen3-235B__bs1_in4096_out512__breakdown.png" in files
    assert len([f for f in files if f.endswith(".png")]) == len([f for f in files if f.endswith(".svg")]) == 5
    for p in out.glob("*.png"):
        assert 0.02 < non_white_fraction(p) < 0.9, p
    for p in out.glob("*.svg"):
        ET.parse(p)
    # reproducible SVGs: the same records give the same bytes
    again = tmp_path / "fig2"
    assert report_cli("plot", "-r", str(synthetic), "-o", str(again), "-f", "svg").returncode == 0
    assert sorted(p.name for p in again.iterdir()) == sorted(f for f in files if f.endswith(".svg"))
    for p in again.iterdir():
        assert p.read_bytes() == (out / p.name).read_bytes(), p.name


@pytest.mark.parametrize("args", [
    ("report", "-r", "{missing}"),
    ("export", "-r", "{missing}", "-f", "csv"),
    ("plot", "-r", "{missing}"),
    ("compare", "{missing}", "{missing}"),
    ("report", "-r", "{empty}"),
    ("export", "-r", "{synthetic}", "-f", "parquet"),
])
def test_bad_input_is_one_line_and_exit_2(args, tmp_path, synthetic):
    (tmp_path / "empty").mkdir()
    subs = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "synthetic": synthetic}
    cp = report_cli(*[a.format(**subs) for a in args])
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    assert cp.stderr.startswith("moetrace: error:") and cp.stderr.count("\n") == 1, cp.stderr
    assert not (tmp_path / "missing").exists()
