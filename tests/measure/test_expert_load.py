"""Expert load from SGLang's expert distribution recorder, on the dumps SGLang 0.5.17 wrote on 2x H200
(tests/data/gpu-2/results-load, README there): the torch.save reader, the per-stage summary, the
planted-skew check, and the environment and endpoints the SGLang adapter uses."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from moetrace.measure.expert_load import check_planted, read_torch_save, summarize
from moetrace.engines.base import LaunchSpec
from moetrace.engines.sglang import SGLang
from moetrace.engines.vllm import VLLM
from moetrace.matrix import Config
from moetrace.presets import get_preset

LOAD = Path(__file__).resolve().parents[1] / "data" / "gpu-2" / "results-load"


def _record(model: str, config: str) -> dict:
    for p in sorted((LOAD / "records").glob("*.json")):
        rec = json.loads(p.read_text())
        if (rec["model"], rec["config"], rec["status"]) == (model, config, "success"):
            return rec
    raise AssertionError(f"no success of {model} {config} in {LOAD}")


def _counts(rec: dict) -> np.ndarray:
    data = read_torch_save((LOAD / rec["expert_load"]["file"]).read_bytes())
    assert data["rank"] == 0 and data["logical_count"].location == "cuda:0"
    return data["logical_count"].array


QWEN, HOT, EP2 = (_record("Qwen3-235B-slice", "TP1_auto"), _record("GLM-4.6-hot-slice", "TP1_auto"),
                  _record("Qwen3-235B-slice", "TP2_EP2_auto"))


def test_the_reader_gives_the_recorders_counts_per_pass_layer_and_expert():
    # one request: 4096 prompt tokens in one prefill pass, then 512 decode passes (SGLang runs one
    # decode pass more than the 511 that 512 output tokens need); 2 layers x 128 experts (Qwen3),
    # 3 layers x 160 experts (GLM-4.6: layer 0 is dense, so all zero)
    q, h = _counts(QWEN), _counts(HOT)
    assert q.shape == (513, 2, 128) and q.dtype == np.int32
    assert h.shape == (513, 3, 160) and not h[:, 0].any()
    assert (q[0].sum(axis=1) == 4096 * 8).all() and (q[1:].sum(axis=2) == 8).all()


def test_the_planted_skew_is_found_exactly():
    s = summarize(_counts(HOT), top_k=8)
    assert s["moe_layers"] == [1, 2]
    assert {k: (v["passes"], v["tokens"]) for k, v in s["stages"].items()} == {"extend": (1, 4096),
                                                                              "decode": (512, 512)}
    for stage in s["stages"].values():
        c = np.asarray(stage["tokens_per_expert"])
        assert (c[:, :4] == stage["tokens"]).all()  # experts 0-3 got every token of both MoE layers
        assert stage["imbalance"] == [20.0, 20.0]  # 160 experts / top-8
    check = check_planted(s, {"hot_experts": [0, 1, 2, 3]})
    assert check["ok"] and check["expected_imbalance"] == 20.0
    assert HOT["expert_load"]["planted"]["ok"] is True  # what the runner recorded on the node


def test_an_unskewed_router_is_not_taken_for_the_planted_one():
    s = summarize(_counts(QWEN), top_k=8)
    assert not check_planted(s, {"hot_experts": [0, 1, 2, 3]})["ok"]
    # random weights do not route uniformly either: one expert took 1700 of the 4096 prompt tokens
    assert s["stages"]["extend"]["imbalance"] == [6.6406, 5.0352]
    assert QWEN["expert_load"]["stages"] == s["stages"]


def test_tp2_counts_every_token_once_per_rank_and_are_divided_back():
    raw = _counts(EP2)
    assert (raw[1:].sum(axis=2) == 2 * 8).all()  # a decode pass: one token, routed on both ranks
    s = summarize(raw, top_k=8, ep_size=2, replicas=2)
    assert {k: (v["passes"], v["tokens"]) for k, v in s["stages"].items()} == {"extend": (1, 4096),
                                                                              "decode": (512, 512)}
    for stage in s["stages"].values():  # each EP rank holds 64 of the 128 experts
        ranks = np.asarray(stage["ep_rank_tokens"])
        assert ranks.shape == (2, 2) and (ranks.sum(axis=1) == stage["tokens"] * 8).all()
    assert s["stages"]["extend"]["ep_rank_tokens"][0] == [17480, 15288]
    # the record on the node was written before the division (README of tests/data/gpu-2)
    assert EP2["expert_load"]["stages"]["extend"]["tokens"] == 9216
    with pytest.raises(ValueError, match="multiples of 2"):
        summarize(_counts(QWEN), top_k=8, replicas=2)


def test_the_reader_runs_no_code_from_the_file():
    hostile = b"\x80\x02cos\nsystem\n(S'echo pwned'\ntR."  # os.system('echo pwned') when unpickled
    with pytest.raises(pickle.UnpicklingError, match="refused global os.system"):
        read_torch_save(_zip({"archive/data.pkl": hostile}))
    with pytest.raises(ValueError, match="not a torch.save"):
        read_torch_save(_zip({"archive/other": b"{}"}))


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return buf.getvalue()


def test_sglang_launches_its_recorder_into_the_attempt_and_vllm_says_why_it_has_none(tmp_path):
    spec = LaunchSpec(preset=get_preset("Qwen3-235B"), config=Config(2, 2, "auto"), model_path="m", port=1,
                      expert_load_dir=tmp_path / "expert_load")
    cmd = SGLang().command(spec)
    assert cmd[cmd.index("--expert-distribution-recorder-mode") + 1] == "stat"
    assert SGLang().environment(spec)["SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR"] == str(tmp_path / "expert_load")
    assert SGLang().expert_load_replicas(spec.config) == 2
    spec.expert_load_dir = None
    assert "--expert-distribution-recorder-mode" not in SGLang().command(spec)
    sent = []
    assert VLLM().capture_expert_load(None, "", tmp_path, lambda: sent.append(1)) is None and not sent
    assert "EPLB" in VLLM.expert_load_absent
