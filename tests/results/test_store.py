"""The results store's rules (the spec's), durability and concurrency."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import pytest

from moetrace.results.store import ResultsStore, success_entry


def _rec(status: str, key: str = "M::TP8_EP2_auto", **extra) -> dict:
    model, _, config = key.partition("::")
    r = {"model": model, "config": config, "key": key, "status": status}
    if status == "success":
        r.update(workload={"batch_size": 1, "input_len": 4096, "output_len": 512},
                 metrics={"latency_s": 7.5912, "input_throughput_tok_per_s": 15933.8712,
                          "output_throughput_tok_per_s": 69.8149, "itl_ms": 14.3211, "ttft_ms": 257.06})
    else:
        r.update(error={"type": "OOM", "message": "CUDA out of memory...", "log_path": "attempts/x/server.log"})
    r.update(extra)
    return r


SPEC_SUCCESS_KEYS = ["model", "config", "batch_size", "input_len", "output_len", "latency_s",
                     "input_throughput_tok_per_s", "output_throughput_tok_per_s", "itl_ms", "last_updated"]
SPEC_FAILURE_KEYS = ["model", "config", "error_message", "error_type", "last_updated"]


def test_views_have_the_spec_shape_and_rounding(store):
    store.commit(_rec("success"))
    store.commit(_rec("failure", "M::TP4_auto"))
    s = json.loads(store.success_path.read_text())
    f = json.loads(store.failure_path.read_text())
    e = s["M::TP8_EP2_auto"]
    assert list(e)[:len(SPEC_SUCCESS_KEYS)] == SPEC_SUCCESS_KEYS
    assert (e["latency_s"], e["input_throughput_tok_per_s"], e["output_throughput_tok_per_s"], e["itl_ms"]) == \
        (7.59, 15933.87, 69.81, 14.32)
    assert e["batch_size"] == 1 and e["input_len"] == 4096 and e["output_len"] == 512
    assert len(e["last_updated"]) == 19 and e["last_updated"][10] == "T"  # 2025-11-27T23:45:12
    fe = f["M::TP4_auto"]
    assert list(fe)[:len(SPEC_FAILURE_KEYS)] == SPEC_FAILURE_KEYS
    assert fe["error_type"] == "OOM" and fe["error_message"] == "CUDA out of memory..."


def test_rerun_updates_entry(store):
    store.commit(_rec("success"))
    r = _rec("success")
    r["metrics"] = dict(r["metrics"], latency_s=6.0)
    store.commit(r)
    s, _ = store.views()
    assert s["M::TP8_EP2_auto"]["latency_s"] == 6.0 and len(s) == 1


def test_success_removes_failure(store):
    store.commit(_rec("failure"))
    assert "M::TP8_EP2_auto" in store.views()[1]
    store.commit(_rec("success"))
    s, f = store.views()
    assert "M::TP8_EP2_auto" in s and "M::TP8_EP2_auto" not in f


def test_failure_never_overwrites_success_but_is_recorded(store):
    store.commit(_rec("success"))
    store.commit(_rec("failure"))
    s, f = store.views()
    assert s["M::TP8_EP2_auto"]["latency_s"] == 7.59
    assert f["M::TP8_EP2_auto"]["error_type"] == "OOM"
    assert [r["status"] for r in store.records()] == ["success", "failure"]


def test_rebuild_reproduces_views_exactly(store):
    import random
    rng = random.Random(1)
    for i in range(60):
        key = f"M{rng.randrange(3)}::TP{rng.choice([4, 8])}_auto"
        store.commit(_rec(rng.choice(["success", "failure"]), key, finished_at=f"2026-01-01T00:00:{i:02d}"))
    before = (store.success_path.read_text(), store.failure_path.read_text())
    store.success_path.unlink()
    store.failure_path.write_text("{}")
    store.rebuild()
    assert (store.success_path.read_text(), store.failure_path.read_text()) == before


def test_every_attempt_is_its_own_record(store):
    for _ in range(3):
        store.commit(_rec("failure"))
    recs = store.records()
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert all((store.root / r["record_path"]).is_file() for r in recs)


@pytest.mark.parametrize("content", ["{\"a\": {\"model\": ", "not json at all", "[1, 2, 3]", "{\"k\": 5}"])
def test_corrupt_view_is_moved_aside_kept_and_rebuilt(store, content):
    store.commit(_rec("success"))
    store.success_path.write_text(content)
    s, _ = store.views()
    assert "M::TP8_EP2_auto" in s  # rebuilt from records
    kept = list(store.root.glob("success_results.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == content
    assert any("success_results.json" in w and "moved it to" in w for w in store.warnings)
    # the next commit works on the rebuilt view
    store.commit(_rec("success", "M::TP4_auto"))
    assert set(json.loads(store.success_path.read_text())) == {"M::TP8_EP2_auto", "M::TP4_auto"}


def test_corrupt_view_found_during_commit(store):
    store.commit(_rec("success"))
    store.failure_path.write_text("garbage")
    store.commit(_rec("failure", "M::TP4_auto"))
    assert set(json.loads(store.failure_path.read_text())) == {"M::TP4_auto"}
    assert list(store.root.glob("failure_results.json.corrupt-*"))


def test_existing_results_files_are_imported_not_dropped(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    spec_success = {"Qwen3-235B::TP8_EP2_auto": {
        "model": "Qwen3-235B", "config": "TP8_EP2_auto", "batch_size": 1, "input_len": 4096, "output_len": 512,
        "latency_s": 7.59, "input_throughput_tok_per_s": 15933.87, "output_throughput_tok_per_s": 69.81,
        "itl_ms": 14.32, "last_updated": "2025-11-27T23:45:12"}}
    spec_failure = {"DeepSeek-V3.1::TP4_auto": {"model": "DeepSeek-V3.1", "config": "TP4_auto",
                                                "error_message": "CUDA out of memory...", "error_type": "OOM",
                                                "last_updated": "2025-11-27T23:50:00"}}
    (root / "success_results.json").write_text(json.dumps(spec_success))
    (root / "failure_results.json").write_text(json.dumps(spec_failure))
    st = ResultsStore(root, warn=lambda m: None)
    st.commit(_rec("success", "GLM-4.6::TP8_EP2_auto"))
    s, f = st.views()
    assert set(s) == {"Qwen3-235B::TP8_EP2_auto", "GLM-4.6::TP8_EP2_auto"}
    assert s["Qwen3-235B::TP8_EP2_auto"]["latency_s"] == 7.59
    assert s["Qwen3-235B::TP8_EP2_auto"]["last_updated"] == "2025-11-27T23:45:12"
    assert f["DeepSeek-V3.1::TP4_auto"]["error_type"] == "OOM"


def test_unwritable_directory_is_a_clear_error(tmp_path):
    from moetrace.errors import StoreError
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(StoreError, match="not writable"):
        ResultsStore(f / "sub")


def _writer(root: str, n: int, wid: int) -> None:
    st = ResultsStore(root, warn=lambda m: None)
    for i in range(n):
        st.commit(_rec("success" if i % 3 else "failure", f"W{wid}::TP{i % 5 + 1}_auto", writer=wid, i=i))


def test_eight_processes_fifty_records_each(tmp_path):
    root = str(tmp_path / "r")
    ResultsStore(root)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(root, 50, w)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    st = ResultsStore(root)
    recs = st.records()
    assert len(recs) == 400
    assert {(r["writer"], r["i"]) for r in recs} == {(w, i) for w in range(8) for i in range(50)}
    assert [r["seq"] for r in recs] == list(range(1, 401))
    s, f = st.views()
    expect_s, expect_f = {}, {}
    from moetrace.results.store import apply_record
    for r in recs:
        apply_record(expect_s, expect_f, r)
    assert s == expect_s and f == expect_f


KILLER = r"""
import sys
from moetrace.results.store import ResultsStore
st = ResultsStore(sys.argv[1], warn=lambda m: None)
i = 0
while True:
    rec = st.commit({"model": "K", "config": f"TP{i % 7 + 1}_auto", "key": f"K::TP{i % 7 + 1}_auto",
                     "status": "success" if i % 2 else "failure", "n": i,
                     "metrics": {"latency_s": 1.0 + i}, "workload": {"batch_size": 1},
                     "error": {"type": "OOM", "message": "m"}, "pad": "x" * (i % 50) * 100})
    print(rec["seq"], flush=True)
    i += 1
"""


def test_sigkill_mid_write_leaves_valid_files_and_no_reported_record_missing(tmp_path):
    import random
    root = tmp_path / "k"
    rng = random.Random(7)
    reported: set[int] = set()
    for _ in range(20):
        p = subprocess.Popen([sys.executable, "-c", KILLER, str(root)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.4 + rng.random() * 0.6)
        os.kill(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        reported |= {int(x) for x in out.split()}
        for name in ("success_results.json", "failure_results.json"):
            if (root / name).exists():
                json.loads((root / name).read_text())  # always parses
    st = ResultsStore(root, warn=lambda m: None)
    seqs = {r["seq"] for r in st.records()}
    assert reported and reported <= seqs
    st.commit(_rec("success", "K::final"))  # views catch up with records written before a kill
    s, f = st.views()
    exp_s, exp_f = {}, {}
    from moetrace.results.store import apply_record
    for r in st.records():
        apply_record(exp_s, exp_f, r)
    assert s == exp_s and f == exp_f
    assert not list(root.glob("*.corrupt-*"))


def test_success_entry_links_profiles():
    e = success_entry(_rec("success", profile={"extend": "a/x.gz", "decode": "a/y.gz"}))
    assert e["profile_extend"] == "a/x.gz" and e["profile_decode"] == "a/y.gz"


def test_results_files_follow_the_users_umask(tmp_path):
    """Other users on a shared filesystem must be able to read the views and records
    (tempfile.mkstemp made them 0600 whatever the umask)."""
    old = os.umask(0o022)
    try:
        st = ResultsStore(tmp_path / "r", warn=lambda m: None)
        rec = st.commit(_rec("success"))
        os.umask(0o002)
        st.commit(_rec("failure", "M::TP4_auto"))
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(st.root / rec["record_path"]) == 0o644
    assert mode(st.success_path) == mode(st.failure_path) == 0o664  # rewritten under umask 002
    assert mode(st.root / "records" / "00000002.json") == 0o664


DIES_MID_WRITE = r"""
import os, signal, sys
from moetrace.results import store as s
st = s.ResultsStore(sys.argv[1], warn=lambda m: None)
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)   # killed after the temp file is written
st.commit({"model": "M", "config": "TP1_auto", "key": "M::TP1_auto", "status": "failure", "error": {}})
"""


def test_stale_temp_files_of_a_killed_writer_are_removed_by_the_next(tmp_path):
    root = tmp_path / "r"
    p = subprocess.run([sys.executable, "-c", DIES_MID_WRITE, str(root)], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    left = [f for f in root.rglob("*.tmp")]
    assert len(left) == 1  # the record it was writing
    keep = [root / ".success_results.json.notours.tmp", root / "records" / "notes.tmp"]  # not the store's naming
    for f in keep:
        f.write_text("x")
    st = ResultsStore(root, warn=lambda m: None)
    st.commit(_rec("success"))
    assert [f for f in root.rglob("*.tmp") if f not in keep] == [] and all(f.exists() for f in keep)


def test_temp_files_of_a_live_or_recent_writer_are_kept(tmp_path):
    from moetrace.results.store import _temp_name
    st = ResultsStore(tmp_path / "r", warn=lambda m: None)
    live = st.root / _temp_name(st.success_path)  # this process: alive
    other_host = st.root / _temp_name(st.failure_path, host="elsewhere", pid=1)  # cannot tell: recent, kept
    old_other = st.root / "records" / _temp_name(st.root / "records" / "00000009.json", host="elsewhere", pid=1)
    for f in (live, other_host, old_other):
        f.write_text("{")
    os.utime(old_other, (time.time() - 7200, time.time() - 7200))  # a writer on another node, gone for 2 h
    st.commit(_rec("success"))
    assert live.exists() and other_host.exists() and not old_other.exists()


def test_one_engine_per_results_directory(store):
    # Model::config is the spec's key: a second engine's result would replace the first's and a table
    # would mix engines under one label (vLLM's and SGLang's DeepSeek-V3.1 TP1_auto in tests/data/gpu-2)
    from moetrace.errors import StoreError

    store.commit(_rec("success", engine={"name": "sglang"}))
    store.check_engine("sglang")
    with pytest.raises(StoreError, match=r"holds sglang results; vllm's go into another results directory"):
        store.commit(_rec("success", engine={"name": "vllm"}))
    with pytest.raises(StoreError, match="--results DIR"):
        store.check_engine("vllm")
    assert len(store.records()) == 1 and json.loads(store.success_path.read_text())["M::TP8_EP2_auto"]["engine"] == "sglang"
