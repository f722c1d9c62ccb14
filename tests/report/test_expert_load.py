"""Expert load (--expert-load) in the tables (--show load) and the HTML report, on the REAL
records of tests/data/gpu-2/results-load (2x H200, SGLang 0.5.17: Qwen3-235B-slice TP1 and
TP2 EP2, GLM-4.6-hot-slice TP1 with a planted router whose experts 0-3 win every token), and
on records whose engine has no recorder or whose recording failed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from moetrace.cli import main
from moetrace.options import SHOW_COLUMNS
from moetrace.report.tables import SHOW_CHOICES, model_tables
from moetrace.results.store import ResultsStore

from ..test_tables import _rows
from .conftest import synthetic_record

LOAD = Path(__file__).resolve().parents[1] / "data" / "gpu-2" / "results-load"
LOAD_HEADER = ["expert max/mean (extend)", "expert max/mean (decode)", "EP-rank max/mean"]
VLLM_REASON = ("vLLM counts tokens per expert only inside EPLB (--enable-eplb, expert parallelism on GPUs; "
               "vllm/distributed/eplb/eplb_state.py) and serves none of it over HTTP")


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


def test_show_choices_agree():
    assert SHOW_CHOICES == SHOW_COLUMNS and "load" in SHOW_COLUMNS


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
    assert cells["M TP2_auto"] == ["n/a (vLLM counts tokens per expert only inside EPLB)", "n/a", "n/a"]
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


def test_run_show_load_says_why_the_engine_has_none(tmp_path):
    """A real `moetrace run --expert-load --show load` against a replayed vLLM stream: vLLM has
    no recorder, and the run's own tables say so."""
    from tests.conftest import moetrace
    from tests.replay_server import Reply, ReplayServer
    body = (Path(__file__).resolve().parents[1] / "data" / "streams" / "vllm_cpu_completions_bs1.sse").read_bytes()
    with ReplayServer(Reply(body)) as srv:
        cp = moetrace("run", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "vllm", "--base-url", srv.url,
                      "--input-len", "8", "--output-len", "8", "--no-profile", "--no-warmup", "--expert-load",
                      "--show", "load", "-r", str(tmp_path / "r"), env={"GITHUB_STEP_SUMMARY": ""})
    assert cp.returncode == 0, cp.stderr
    row = next(line for line in cp.stdout.splitlines() if line.startswith("| TP8_EP2_auto"))
    assert row.endswith("| n/a (vLLM counts tokens per expert only inside EPLB) | n/a | n/a |"), row
    # and the per-config table printed when the config finished
    assert cp.stdout.count("n/a (vLLM counts tokens per expert only inside EPLB)") == 2
