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


def test_sglang_launches_its_recorder_into_the_attempt_and_vllm_its_routed_experts(tmp_path):
    spec = LaunchSpec(preset=get_preset("Qwen3-235B"), config=Config(2, 2, "auto"), model_path="m", port=1,
                      expert_load_dir=tmp_path / "expert_load")
    cmd = SGLang().command(spec)
    assert cmd[cmd.index("--expert-distribution-recorder-mode") + 1] == "stat"
    assert SGLang().environment(spec)["SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR"] == str(tmp_path / "expert_load")
    assert SGLang().expert_load_replicas(spec.config) == 2
    spec.expert_load_dir = None
    assert "--expert-distribution-recorder-mode" not in SGLang().command(spec)
    # vLLM: --enable-return-routed-experts in the recorder's launch on GPUs; its CPU build refuses the flag
    vspec = LaunchSpec(preset=get_preset("Qwen3-235B"), config=Config(2, 2, "auto"), model_path="m", port=1,
                       expert_load_dir=tmp_path / "expert_load")
    assert "--enable-return-routed-experts" in VLLM().command(vspec)
    vspec.expert_load_dir = None
    assert "--enable-return-routed-experts" not in VLLM().command(vspec)
    assert VLLM().expert_load_unavailable("cuda") is None
    assert "Model Runner V2" in VLLM().expert_load_unavailable("cpu")
    vspec.expert_load_dir, vspec.device = tmp_path / "expert_load", "cpu"
    assert "--enable-return-routed-experts" not in VLLM().command(vspec)
    # Model Runner V2 for the recorder's launch where the release needs it (0.32), never for 0.25.0's V1 capture
    vspec.device = "cuda"
    for version, v2 in (("0.25.0", False), ("0.32.0", True), (None, False)):
        vspec.engine_version = version
        assert ("VLLM_USE_V2_MODEL_RUNNER" in VLLM().environment(vspec)) is v2, version
    vspec.expert_load_dir = None
    assert "VLLM_USE_V2_MODEL_RUNNER" not in VLLM().environment(vspec)  # the measured launch: the default


# vLLM 0.25.0's completion choice carries ``routed_experts``: "base64-encoded .npy bytes (numpy serialization).
# Shape after decode: (num_tokens - 1, num_layers, num_experts_per_tok) dtype uint8/uint16 ... Decode:
# np.load(io.BytesIO(base64.b64decode(s)))" (vllm/entrypoints/openai/completion/protocol.py; the server writes it
# with np.save and base64, completion/serving.py). Layers without experts keep zero rows (the capturer's buffer is
# cleared every step, fused_moe/routed_experts_capturer.py). The fixtures below are written from that text.
def _routed_body(routed: np.ndarray) -> dict:
    import base64
    buf = io.BytesIO()
    np.save(buf, routed)
    return {"choices": [{"index": 0, "text": "", "routed_experts": base64.b64encode(buf.getvalue()).decode("ascii")}]}


def _routing(prompt: int, generated: int, layers: int, dense: int, experts: int, k: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros((prompt + generated - 1, layers, k), dtype=np.uint16 if experts > 255 else np.uint8)
    for t in range(r.shape[0]):
        for layer in range(dense, layers):
            r[t, layer] = rng.choice(experts, size=k, replace=False)
    return r


def test_vllm_routed_experts_become_counts_per_pass_layer_and_expert(tmp_path):
    from moetrace.engines.base import ExpertLoadRequest
    from moetrace.measure.expert_load import routed_to_counts

    routed = _routing(prompt=6, generated=4, layers=5, dense=2, experts=16, k=4)
    sent = []

    class _Http:  # the one POST the adapter makes, answered with a body in the documented format
        def post(self, url, json, timeout):
            sent.append((url, json))
            return type("R", (), {"status_code": 200, "json": lambda self: _routed_body(routed), "text": ""})()

    req = ExpertLoadRequest(run=lambda: None, prompts=[list(range(6))], max_tokens=4, model="m", experts=16)
    files = VLLM().capture_expert_load(_Http(), "http://h", tmp_path, req)
    url, body = sent[0]
    assert url == "http://h/v1/completions" and body["stream"] is False and body["prompt"] == list(range(6))
    assert body["max_tokens"] == 4 and body["ignore_eos"] is True
    assert [f.name for f in files] == ["routed_experts.npz"]
    counts = VLLM.expert_counts(files[0])
    assert counts.shape == (1 + 3, 5, 16)  # the prompt as one pass, then every generated token but the last
    assert (counts[:, :2] == 0).all()  # the dense layers' zero rows are not "expert 0 four times"
    assert counts[0].sum() == 6 * 3 * 4 and (counts[1:].sum(axis=(1, 2)) == 3 * 4).all()
    for layer in range(2, 5):
        assert np.bincount(routed[:6, layer].ravel(), minlength=16).tolist() == counts[0, layer].tolist()
    s = summarize(counts, top_k=4, batch_size=1, ep_size=2)
    assert s["moe_layers"] == [2, 3, 4]
    assert (s["stages"]["extend"]["tokens"], s["stages"]["decode"]["tokens"]) == (6, 3)
    assert s["stages"]["decode"]["passes"] == 3
    with pytest.raises(ValueError, match="out of range"):
        routed_to_counts(routed, 6, 8)
    with pytest.raises(ValueError, match="shape"):
        routed_to_counts(routed[:3], 6, 16)


def test_vllm_routed_experts_of_a_batch_are_summed_pass_by_pass(tmp_path):
    a = _routing(prompt=4, generated=3, layers=3, dense=1, experts=8, k=2, seed=1)
    b = _routing(prompt=4, generated=3, layers=3, dense=1, experts=8, k=2, seed=2)
    bodies = [_routed_body(a)["choices"][0], _routed_body(b)["choices"][0]]
    bodies[1]["index"] = 1

    class _Http:
        def post(self, url, json, timeout):
            assert json["prompt"] == [[1] * 4, [2] * 4]
            return type("R", (), {"status_code": 200, "json": lambda self: {"choices": bodies[::-1]}, "text": ""})()

    from moetrace.engines.base import ExpertLoadRequest
    from moetrace.measure.expert_load import routed_to_counts
    req = ExpertLoadRequest(run=lambda: None, prompts=[[1] * 4, [2] * 4], max_tokens=3, model="m", experts=8)
    (f,) = VLLM().capture_expert_load(_Http(), "http://h", tmp_path, req)
    counts = VLLM.expert_counts(f)
    assert (counts == routed_to_counts(a, 4, 8) + routed_to_counts(b, 4, 8)).all()
    s = summarize(counts, top_k=2, batch_size=2)
    assert (s["stages"]["extend"]["tokens"], s["stages"]["decode"]["tokens"]) == (8, 4)


def test_repeated_ids_of_the_routing_simulator_are_all_counted():
    """vLLM's uniform_random simulator (--routing balanced) draws a token's top-k with replacement
    (fused_moe/router/routing_simulator_router.py, torch.randint): a repeated id is two slots of that expert."""
    from moetrace.measure.expert_load import routed_to_counts
    rng = np.random.default_rng(7)
    routed = rng.integers(0, 16, size=(9, 3, 8)).astype(np.uint8)
    routed[:, 0] = 0  # a dense layer
    counts = routed_to_counts(routed, prompt_tokens=5, experts=16)
    assert counts.shape == (5, 3, 16) and (counts[:, 0] == 0).all()
    assert counts[0].sum() == 5 * 2 * 8 and (counts[1:].sum(axis=(1, 2)) == 2 * 8).all()
    assert counts[0, 1].tolist() == np.bincount(routed[:5, 1].ravel(), minlength=16).tolist()
    s = summarize(counts, top_k=8)
    assert (s["stages"]["extend"]["tokens"], s["stages"]["decode"]["tokens"]) == (5, 4)


def test_vllm_without_the_flag_says_so():
    from moetrace.engines.vllm import decode_routed_experts
    from moetrace.errors import ProfileError
    with pytest.raises(ProfileError, match="--enable-return-routed-experts"):
        decode_routed_experts(None)
    r = _routing(prompt=3, generated=2, layers=2, dense=0, experts=300, k=2)
    assert (decode_routed_experts(_routed_body(r)["choices"][0]["routed_experts"]) == r).all()
