"""Expert load (--expert-load) in the tables (--show load) and the HTML report, on the REAL
records of tests/data/gpu-2/results-load (2x H200, SGLang 0.5.17: Qwen3-235B-slice TP1 and
TP2 EP2, GLM-4.6-hot-slice TP1 with a planted router whose experts 0-3 win every token), and
on records whose engine has no recorder or whose recording failed."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from click.testing import CliRunner

from moetrace.cli import main
from moetrace.options import SHOW_COLUMNS
from moetrace.report import data
from moetrace.report.tables import COLUMN_SETS, EXTRA_COLUMNS, model_tables
from moetrace.results.store import ResultsStore

from moetrace.engines.vllm import VLLM

from ..test_tables import _rows
from .conftest import synthetic_record

LOAD = Path(__file__).resolve().parents[1] / "data" / "gpu-2" / "results-load"
LOAD_HEADER = ["expert max/mean (extend)", "expert max/mean (decode)", "EP-rank max/mean"]
VLLM_REASON = VLLM.expert_load_absent  # what the vLLM adapter records on a CPU machine


def _table(results: Path, *show: str) -> str:
    res = CliRunner().invoke(main, ["table", "-r", str(results), *[a for s in show for a in ("--show", s)]])
    assert res.exit_code == 0, res.output
    return res.output


def _load_cells(md: str) -> dict[str, list[str]]:
    """config -> its three --show load cells, over every model table of the output."""
    out = {}
    for block in md.split("### ")[1:]:
        model = block.splitlines()[0].strip()
        header, _sep, *rows = _rows(block)
        assert header[-3:] == LOAD_HEADER
        out.update({f"{model} {r[0]}": r[-3:] for r in rows})
    return out


def test_every_show_choice_has_its_columns():
    assert "load" in SHOW_COLUMNS
    assert all(c in EXTRA_COLUMNS for k in SHOW_COLUMNS for c in COLUMN_SETS.get(k, (k,)))


def test_show_load_columns_from_the_real_records():
    # the views of this directory were written before they kept expert load: the cells come
    # from the records the entries name
    assert "expert_load" not in next(iter(json.loads((LOAD / "success_results.json").read_text()).values()))
    cells = _load_cells(_table(LOAD, "load"))
    # planted router: 4 of 160 experts take every token, top-8 -> max/mean = 160/8 = 20
    assert cells["GLM-4.6-hot-slice TP1_auto"] == ["20.00", "20.00", "-"]
    rec = json.loads((LOAD / "records" / "00000001.json").read_text())["expert_load"]["stages"]
    assert cells["Qwen3-235B-slice TP1_auto"] == [f"{rec['extend']['imbalance_max']:.2f}",
                                                  f"{rec['decode']['imbalance_max']:.2f}", "-"] == ["6.64", "6.12", "-"]
    # EP 2: the busiest EP rank over the mean rank (this record's stored summary predates the fix
    # that split its passes into extend and decode, so only its EP cell is checked)
    ep = cells["Qwen3-235B-slice TP2_EP2_auto"][2]
    assert re.fullmatch(r"\d+\.\d\d", ep) and 1.0 < float(ep) < 1.2
    # with other columns: the load columns come where --show puts them
    header = _rows(_table(LOAD, "load", "ttft").split("### ")[1])[0]
    assert header[-4:] == LOAD_HEADER + ["TTFT (ms)"]


def test_show_load_without_expert_load_is_empty(synthetic):
    cells = _load_cells(_table(synthetic, "load"))
    assert cells and all(c == ["", "", ""] for c in cells.values())


def _store_with(tmp_path: Path, **loads) -> Path:
    store = ResultsStore(tmp_path / "res", warn=lambda m: None)
    for config, el in loads.items():
        store.commit(synthetic_record("M", config, tp=2, expert_load=el))
    return store.root


def test_engine_without_a_recorder_and_a_failed_recording(tmp_path):
    root = _store_with(tmp_path, TP2_auto={"available": False, "reason": VLLM_REASON},
                       TP2_EP2_auto={"available": True, "error": "HTTPStatusError: Server error '500' for url x"})
    view = json.loads((root / "success_results.json").read_text())
    assert view["M::TP2_auto"]["expert_load"] == {"available": False, "reason": VLLM_REASON}
    cells = _load_cells(_table(root, "load"))
    assert cells["M TP2_auto"] == ["n/a (vLLM's CPU build cannot return routed experts)", "n/a", "n/a"]
    assert cells["M TP2_EP2_auto"] == ["failed (HTTPStatusError)", "failed", "failed"]


def test_views_keep_a_brief_and_the_table_reads_it(tmp_path):
    recs = [json.loads(p.read_text()) for p in sorted((LOAD / "records").glob("*.json"))]
    glm = next(r["expert_load"] for r in recs if r.get("expert_load") and r["model"] == "GLM-4.6-hot-slice")
    root = _store_with(tmp_path, TP1_auto=glm)
    brief = json.loads((root / "success_results.json").read_text())["M::TP1_auto"]["expert_load"]
    assert brief["stages"]["decode"] == {"passes": 512, "tokens": 512, "imbalance_max": 20.0, "ep_rank_imbalance": 1.0}
    assert brief["planted"] == {"ok": True, "expected_imbalance": 20.0} and "tokens_per_expert" not in str(brief)
    s, _ = ResultsStore(root, readonly=True).views()
    assert _load_cells(model_tables(s, extra=("load",)))["M TP1_auto"] == ["20.00", "20.00", "-"]  # no record read


def test_load_maps_bin_wide_layers():
    counts = [[(e * 7 + layer) % 50 for e in range(384)] for layer in range(3)]
    el = {"available": True, "ep_size": 8, "moe_layers": [3, 4, 5],
          "stages": {"decode": {"tokens": 10, "passes": 10, "tokens_per_expert": counts, "imbalance": [1.0] * 3,
                                "ep_rank_tokens": [[sum(r[i * 48:(i + 1) * 48]) for i in range(8)] for r in counts]}}}
    (m,) = data.load_maps(el)
    assert (m.stage, m.layers, m.bin, m.columns, m.experts) == ("decode", (3, 4, 5), 2, 192, 384)
    assert m.values[1][5] == counts[1][10] + counts[1][11] and m.expert_range(191) == (382, 383)
    (m,) = data.load_maps(el, max_columns=100)
    assert (m.bin, m.columns, m.expert_range(m.columns - 1)) == (4, 96, (380, 383))
    ((stage, ranks, _),) = data.ep_rank_bars(el)
    assert stage == "decode" and sum(ranks) == sum(map(sum, counts)) and len(ranks) == 8
    assert data.load_maps({"available": False, "reason": "x"}) == []
    assert data.load_maps({"available": True, "error": "x"}) == []
    assert data.expert_load_note({"available": True, "error": "could not read f.pt: KeyError: 'x'"}) == \
        "failed (could not read f.pt)"


def test_run_show_load_says_why_the_engine_has_none(tmp_path):
    """A real `moetrace run --expert-load --show load` against a replayed vLLM stream on this CPU machine:
    vLLM's CPU build cannot return routed experts, and the run's own tables say so."""
    from tests.conftest import moetrace
    from tests.replay_server import Reply, ReplayServer
    body = (Path(__file__).resolve().parents[1] / "data" / "streams" / "vllm_cpu_completions_bs1.sse").read_bytes()
    with ReplayServer(Reply(body, chunk_delay_s=0.02)) as srv:  # paced as generated
        cp = moetrace("run", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "vllm", "--base-url", srv.url,
                      "--input-len", "8", "--output-len", "8", "--no-profile", "--no-warmup", "--expert-load",
                      "--show", "load", "-r", str(tmp_path / "r"), env={"GITHUB_STEP_SUMMARY": ""})
    assert cp.returncode == 0, cp.stderr
    row = next(line for line in cp.stdout.splitlines() if line.startswith("| TP8_EP2_auto"))
    assert row.endswith("| n/a (vLLM's CPU build cannot return routed experts) | n/a | n/a |"), row
    # and the per-config table printed when the config finished
    assert cp.stdout.count("n/a (vLLM's CPU build cannot return routed experts)") == 2


# ------------------------------------------------------------------ the HTML report
def _maps(page: str) -> list[str]:
    return re.findall(r'<svg class="chart heatmap".*?</svg>', page, re.S)


def _drawn_cells(svg: str) -> dict[str, int]:
    """Cells drawn per colour: every path of class "cell" is strokes h<n> (n cells each)."""
    out: dict[str, int] = {}
    for color, d in re.findall(r'<path class="cell" stroke="([^"]+)" d="([^"]+)"', svg):
        out[color] = out.get(color, 0) + sum(int(n) for n in re.findall(r"h(\d+)", d))
    return out


def _page(root: Path, out: Path) -> str:
    from moetrace.report.html import write_html
    write_html(data.load(root), root=root, out=out)
    return out.read_text()


def test_heat_maps_from_the_real_records(tmp_path):
    import xml.etree.ElementTree as ET

    from moetrace.report.svg import HEAT
    page = _page(LOAD, tmp_path / "report.html")
    maps = _maps(page)
    # GLM TP1 and Qwen TP1: extend and decode; Qwen TP2 EP2: its stored summary has extend only
    assert [(re.search(r'data-stage="(\w+)"', m).group(1), re.search(r'data-experts="(\d+)"', m).group(1))
            for m in maps] == [("extend", "160"), ("decode", "160"), ("extend", "128"), ("decode", "128"),
                               ("extend", "128")]
    for m in maps:
        ET.fromstring(m)
        rows = [r.split(",") for r in re.search(r'data-v="([^"]+)"', m).group(1).split(";")]
        cols = int(re.search(r'data-experts="(\d+)"', m).group(1))
        assert len(rows) == 2 and {len(r) for r in rows} == {cols}  # one row per MoE layer, a cell per expert
        assert sum(_drawn_cells(m).values()) == 2 * cols
        assert m.count('<rect class="row"') == 2 and m.count("<title>layer ") == 2
        assert "<text" in m and m.count("<text") < 30  # no text per cell
    glm_extend, glm_decode = maps[0], maps[1]
    assert 'data-layers="1,2"' in glm_extend and len(glm_extend) < 8000  # layer 0 of the slice is dense
    # the planted experts 0-3 take every token, alone in the darkest colour: columns 0-3 of both rows
    for m, tokens in ((glm_extend, 4096), (glm_decode, 512)):
        assert re.search(r'data-v="([^"]+)"', m).group(1).split(";")[1].startswith(f"{tokens},{tokens},{tokens},"
                                                                                   f"{tokens},")
        assert f'<path class="cell" stroke="{HEAT[-1]}" d="M0 0.5h4m-4 1h4"/>' in m
        assert f"layer 2: busiest expert 0 with {tokens:,} tokens; mean {tokens * 8 / 160:,.1f} per expert; " \
               "max/mean 20.00" in m
    glm = page[page.index("<h4>TP1_auto</h4>"):]
    assert "Counted by SGLang expert distribution recorder (stat)" in glm.split("</p>")[0]
    assert '<p class="planted ok">Planted router (moetrace tiny --hot-experts): experts 0, 1, 2, 3 should take ' \
           'every token of every MoE layer and stage, so max/mean 20 in each layer: found.</p>' in page
    assert page.count('class="planted') == 1  # the Qwen slices have no planted router
    (href,) = re.findall(r'<a href="([^"]+)">raw counts</a>', glm.split("</p>")[0])
    assert (tmp_path / href).resolve().is_file() and href.endswith(".pt")
    # EP 2: the tokens per EP rank, one bar per rank and stage, and a line between the ranks' experts
    (ep,) = re.findall(r'<svg class="chart eprank".*?</svg>', page, re.S)
    ET.fromstring(ep)
    assert ep.count('<rect class="bar"') == 2 and "extend, EP rank 1 (experts 64–127)" in ep
    assert '<path class="ep" d="M64 0v2"' in maps[4]


def test_ep2_recounted_from_its_raw_file(tmp_path):
    """The TP2 EP2 record's summary predates the fix for its passes and replicas: recounted from
    the raw file it names, it has both stages, and each EP rank's bar in each."""
    from moetrace.measure.expert_load import read_torch_save, summarize
    rec = json.loads((LOAD / "records" / "00000004.json").read_text())
    el = dict(rec["expert_load"])
    counts = read_torch_save((LOAD / el["file"]).read_bytes())["logical_count"].array
    el.update(summarize(counts, top_k=8, batch_size=1, ep_size=2, replicas=2))
    root = _store_with(tmp_path, TP2_EP2_auto=el)
    page = _page(root, tmp_path / "report.html")
    assert [re.search(r'data-stage="(\w+)"', m).group(1) for m in _maps(page)] == ["extend", "decode"]
    (ep,) = re.findall(r'<svg class="chart eprank".*?</svg>', page, re.S)
    assert ep.count('<rect class="bar"') == 4 and "decode r1" in ep
    ranks = el["stages"]["decode"]["ep_rank_tokens"]
    r0 = ranks[0][0] + ranks[1][0]
    assert f"decode, EP rank 0 (experts 0–63): {r0:,} tokens routed to its experts" in ep
    assert "extend: 4,096 tokens in 1 pass" in page and "decode: 512 tokens in 512 passes" in page
    worst = max(s["ep_rank_imbalance"] for s in el["stages"].values())
    assert _load_cells(_table(root, "load"))["M TP2_EP2_auto"][2] == f"{worst:.2f}"


def test_report_says_why_there_is_no_expert_load(tmp_path):
    root = _store_with(tmp_path, TP2_auto={"available": False, "reason": VLLM_REASON},
                       TP4_auto={"available": False, "reason": VLLM_REASON},
                       TP8_auto={"available": True, "error": "HTTPStatusError: Server error '500' for url x"},
                       TP8_EP2_auto=None)
    page = _page(root, tmp_path / "report.html")
    assert "<h3>Expert load</h3>" in page and not _maps(page) and "eprank" not in page
    assert f'<p class="expert-load-none">TP2_auto, TP4_auto: expert load not exposed by the engine: ' \
           f'{html.escape(VLLM_REASON)}.</p>' in page  # one line for the configs with one reason
    assert '<p class="expert-load-none">TP8_auto: recording the expert load failed: HTTPStatusError: Server error ' \
           '&#x27;500&#x27; for url x.</p>' in page
    assert "TP8_EP2_auto: expert load" not in page
    # a model whose runs did not ask for expert load has no such section
    assert "Expert load" not in _page(_store_with(tmp_path / "b", TP2_auto=None), tmp_path / "b.html")


def test_a_planted_skew_not_found_says_so(tmp_path):
    rec = json.loads((LOAD / "records" / "00000003.json").read_text())
    el = json.loads(json.dumps(rec["expert_load"]))
    el["planted"].update(ok=False)
    el["planted"]["found"]["decode"]["hot_get_every_token"] = False
    page = _page(_store_with(tmp_path, TP1_auto=el), tmp_path / "report.html")
    (line,) = re.findall(r'<p class="planted missed">.*?</p>', page)
    assert "<b>NOT found</b>" in line and "decode: hot experts got every token: no" in line


def test_chromium_draws_the_heat_maps_and_reads_out_a_cell(tmp_path):
    """The real records' report in a real browser: no error, every chart drawn, and hovering a
    heat map cell (a mouse event at the cell's place) reads out its layer, expert and tokens."""
    from .browser import open_page
    page = _page(LOAD, tmp_path / "report.html")
    probe = """<script>window.addEventListener('load', function(){
      var svg = document.querySelector('svg.heatmap'), m = svg.querySelector('.cells').getScreenCTM();
      var p = svg.createSVGPoint(); p.x = 2.5; p.y = 1.5; p = p.matrixTransform(m);
      svg.dispatchEvent(new MouseEvent('mousemove', {clientX: p.x, clientY: p.y, bubbles: true}));
      document.body.setAttribute('data-readout', svg.querySelector('.readout').textContent);
    });</script></body>"""
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe))
    res = open_page(tmp_path / "probe.html", tmp_path / "chromium")
    assert res.console == [] and res.status == "ok", (res.console, res.status)
    drawn, total = map(int, res.charts.split("/"))
    assert drawn == total and total >= 5 + 1
    assert 'data-readout="layer 2, expert 2: 4,096 tokens"' in res.dom
