"""The HTML report on SYNTHETIC records: escaping, self-containment, links, failures,
and a real headless Chromium drawing it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

from moetrace.report import data
from moetrace.report.html import esc, render_html, write_html

from .browser import count_colour, hex_rgb, open_page
from .conftest import WEIRD_MODEL


def _page(root: Path, out: Path) -> str:
    write_html(data.load(root), root=root, out=out)
    return out.read_text()


def test_text_from_records_is_escaped(synthetic, tmp_path):
    page = _page(synthetic, tmp_path / "r.html")
    assert WEIRD_MODEL not in page and "<E>" not in page and "<tag>" not in page
    assert esc(WEIRD_MODEL) in page
    assert esc("bad <tag> & 'quote' \"dq\" 100% _x_") in page
    assert "CUDA out of memory &lt;&amp;&gt; &quot;quoted&quot;" in page  # log excerpt, escaped
    # only our one script: nothing from a record became markup
    assert page.count("<script") == 1


def test_page_is_self_contained(synthetic, tmp_path):
    page = _page(synthetic, tmp_path / "r.html")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""<(script|img|link|iframe)[^>]+(src|href)=["']?(https?:)?//""", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and not [h for h in hrefs if h.startswith(("http:", "https:", "//"))]


def test_every_trace_is_linked_relative_to_the_report(synthetic, tmp_path):
    out = tmp_path / "elsewhere" / "deep" / "report.html"
    page = _page(synthetic, out)
    links = [h for h in re.findall(r'href="([^"#]+)"', page) if "trace" in h]
    assert links, page
    for h in links:
        assert (out.parent / unquote(h)).resolve().is_file(), h
    assert "missing__extend__rank0.trace.json.gz" in page and "(file missing)" in page
    assert "ui.perfetto.dev" in page and "not uploaded" in page


def test_failures_have_classes_phases_and_log_excerpts(synthetic, tmp_path):
    page = _page(synthetic, tmp_path / "r.html")
    fail = page[page.index('id="failures"'):page.index('id="traces"')]
    for cls in ("OOM", "Timeout", "ServerError"):
        assert f'cls">{cls}<' in fail
    assert "earlier success is kept" in fail
    assert "Lines the classifier matched" in fail and "Last lines of the log" in fail


def test_charts_are_well_formed_svg_with_bars(synthetic, tmp_path):
    page = _page(synthetic, tmp_path / "r.html")
    svgs = re.findall(r"<svg .*?</svg>", page, re.S)
    # Qwen3 (2 workloads x 5 metrics + 2 efficiency + 2 breakdowns) + weird model (5)
    assert len(svgs) == 5 + 2 + 2 + 5 + 5
    for s in svgs:
        root = ET.fromstring(s)
        assert root.findall(".//{http://www.w3.org/2000/svg}rect"), s[:200]
    assert "TP8 EP2" in page and "TTFT efficiency" in page


def test_render_is_deterministic(synthetic, tmp_path):
    rows = data.load(synthetic)
    assert render_html(rows, root=synthetic, out_dir=tmp_path) == render_html(rows, root=synthetic, out_dir=tmp_path)


def test_chromium_reports_errors_it_sees(tmp_path):
    """The detector itself: a broken page must show up as console messages and no 'ok'."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
                   'content="default-src \'none\'; script-src \'unsafe-inline\'"></head>'
                   '<body data-report-status="pending"><img src="http://example.invalid/x.png">'
                   "<script>console.error('boom'); nosuchfunction();</script></body></html>")
    res = open_page(bad, tmp_path / "chromium")
    text = "\n".join(res.console)
    assert "boom" in text and "nosuchfunction" in text and "Content Security Policy" in text
    assert res.status == "pending"


def test_chromium_draws_the_synthetic_report(synthetic, tmp_path):
    out = tmp_path / "report.html"
    write_html(data.load(synthetic), root=synthetic, out=out)
    res = open_page(out, tmp_path / "chromium")
    assert res.console == [], res.console
    assert res.status == "ok", res.status
    drawn, total = map(int, res.charts.split("/"))
    assert drawn == total > 0
    # the 'auto' bars are drawn in their colour, the 'triton' ones in theirs
    assert count_colour(res.screenshot, hex_rgb(data.PALETTE[0])) > 3000
    assert count_colour(res.screenshot, hex_rgb(data.PALETTE[1])) > 500


def test_log_excerpts_stay_inside_the_results_directory(tmp_path):
    from moetrace.report.html import log_excerpt
    root = tmp_path / "r"
    (root / "attempts").mkdir(parents=True)
    (root / "attempts" / "server.log").write_text("line\n" * 100 + "last line\n")
    (tmp_path / "secret.txt").write_text("not for the report\n")
    assert log_excerpt(root, "attempts/server.log", lines=2) == "line\nlast line"
    assert log_excerpt(root, "../secret.txt") is None
    assert log_excerpt(root, "attempts/none.log") is None and log_excerpt(root, None) is None


def test_bursty_itl_is_marked_in_the_report(tmp_path):
    from moetrace.results.store import ResultsStore

    from .conftest import synthetic_record
    store = ResultsStore(tmp_path / "res")
    m = {"latency_s": 2.6, "ttft_ms": 600.0, "itl_ms": 3.88, "itl_p50_ms": 0.01, "itl_p99_ms": 1980.0,
         "input_throughput_tok_per_s": 6826.7, "output_throughput_tok_per_s": 257.6, "server_itl_ms": 2.91,
         "delivery": {"burst_share": 0.998, "longest_stall_ms": 1980.0, "stall_ratio": 141428.6, "bursty": True}}
    store.commit(synthetic_record("M", "TP8_auto", metrics=m))
    store.commit(synthetic_record("M", "TP4_auto", tp=4))
    page = _page(tmp_path / "res", tmp_path / "r.html")
    (cell,) = re.findall(r'<td class="bursty" title="([^"]*)">([^<]*)</td>', page)
    assert cell[1] == "3.88 †" and "describes delivery, not generation" in cell[0]
    assert "server&#x27;s own mean ITL: 2.91 ms" in cell[0]
    assert '<ul class="note bursts"><li>TP8_auto: † the stream arrived in bursts (100% of token gaps under 50 µs' in page
    assert page.count('class="bursty"') == 1  # the steady row is not marked
