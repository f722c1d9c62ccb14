"""GPU run 4's queue (benchmarks/gpu/ranks.py), dry-run here: every entry's `moetrace run` arguments parse, plan
and print the launch it would make, on both cards the device tool may give. A typo in the queue would otherwise
be found only on the node, after the install has spent its device time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from moetrace.cli import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
import ranks  # noqa: E402

# per-GPU weights of each TP8_EP2 rank by the planner: these four need an H200 (docs/ranks.md)
H200_ONLY = {"DeepSeek-V3.1", "Kimi-K2-Thinking", "GLM-4.6", "Qwen3-Coder-480B"}
ROUTING_ENV = {"vllm": "VLLM_MOE_ROUTING_SIMULATION_STRATEGY=uniform_random", "sglang": "SGLANG_SIMULATE_UNIFORM_EXPERTS=1"}


@pytest.fixture(scope="module")
def variants_cwd(tmp_path_factory):
    """One working directory for both cards: the weightless variant directories (./.cache) are written once."""
    return tmp_path_factory.mktemp("ranks")


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_every_queue_entry_dry_runs_with_the_verdict_it_is_there_for(gpu, variants_cwd, tmp_path, monkeypatch):
    monkeypatch.chdir(variants_cwd)  # the weightless variant directories go under ./.cache
    names = [e.name for e in ranks.QUEUE]
    assert len(names) == len(set(names))
    assert names[0] == "vllm-Qwen3-235B-TP8_EP2_auto"  # fits either card, no fp8 MoE compile: first
    for e in ranks.QUEUE:
        engine = e.engine.split("-")[0]
        res = CliRunner().invoke(main, ranks.moetrace_args(e, gpu, Path("/x/bin/python"), tmp_path / "r") + ["--dry-run"])
        assert res.exit_code == 0, (e.name, res.output)
        (plan,) = [line for line in res.output.splitlines() if " plan: " in line]
        assert f"1 rank of {e.config}" in plan, plan
        if e.tag == "oom":
            assert "plan: will_not_fit" in plan and "--no-skip-predicted" in ranks.moetrace_args(e, gpu, Path(), Path())
        elif gpu == "h100" and e.model in H200_ONLY:
            assert "plan: will_not_fit" in plan, plan  # recorded as predicted on an H100, no launch
        else:
            assert "plan: fits" in plan, plan
        launch = res.output.splitlines()[-1]
        assert "--load-format dummy" in launch and "/x/bin/python" in launch
        assert (ROUTING_ENV[engine] in launch) == (e.tag != "router"), (e.name, launch)


def test_each_finished_entry_is_packed_at_once(tmp_path, monkeypatch):
    """poll packs the files written since its last pack, whenever done.jsonl grows: a call cut off at the device
    budget still brings back every entry that finished."""
    import io
    import tarfile
    monkeypatch.setattr(ranks, "RUN", tmp_path / "ranks")
    monkeypatch.setattr(ranks, "BASE", tmp_path)
    monkeypatch.setattr(ranks, "OUT", tmp_path / "out")
    ranks.RUN.mkdir()
    assert ranks._entries_done() == 0
    (ranks.RUN / "moetrace-a.txt").write_text("a")
    (ranks.RUN / "done.jsonl").write_text('{"entry": "a"}\n')
    assert ranks._entries_done() == 1
    ranks.pack("p-e1")
    (ranks.RUN / "moetrace-b.txt").write_text("b")
    ranks.pack("p-e2")

    def names(pack):
        data = b"".join(f.read_bytes() for f in sorted((tmp_path / "out").glob(f"{pack}.tar.gz.*")))
        return sorted(tarfile.open(fileobj=io.BytesIO(data)).getnames())
    assert names("p-e1") == ["ranks/done.jsonl", "ranks/moetrace-a.txt"]
    assert names("p-e2") == ["ranks/moetrace-b.txt"]


def test_fixtures_extracts_a_calls_packs_in_the_order_they_were_written(tmp_path):
    """poll packs each finished entry as <name>-eN, then the call's last pack: a later pack's views must win
    (a plain string sort put e10 before e9, and run 4's OOM views lost their last entry that way)."""
    import io
    import subprocess
    import tarfile
    import time

    packs = tmp_path / "call"
    packs.mkdir()
    for i, step in enumerate(["poll-042506-e2", "poll-042506-e9", "poll-042506-e10", "poll-042506"]):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            data = f"written by {step} ({i})".encode()
            info = tarfile.TarInfo("ranks/view.json")
            info.size, info.mtime = len(data), time.time()
            t.addfile(info, io.BytesIO(data))
        (packs / f"{step}.tar.gz.00").write_bytes(buf.getvalue())
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu/fixtures.py"), str(packs), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "ranks/view.json").read_text() == "written by poll-042506 (3)"
    steps = [line.split(": ")[1] for line in r.stderr.splitlines()]
    assert steps == ["poll-042506-e2", "poll-042506-e9", "poll-042506-e10", "poll-042506"]
