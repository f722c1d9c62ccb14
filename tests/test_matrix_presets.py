"""Config matrix parsing, names and validation; presets as data."""

from __future__ import annotations

import json

import pytest

from moetrace.matrix import Config, ConfigError, parse_config_name, parse_matrix, validate
from moetrace.presets import PresetError, all_presets, get_preset


def test_spec_forms_and_names():
    cs = parse_matrix([(4, 1, ["auto"]), (8, 2, ["auto", "triton_kernel"])])
    assert [c.name for c in cs] == ["TP4_auto", "TP8_EP2_auto", "TP8_EP2_triton_kernel"]


def test_quantization_and_fallback_form():
    (c,) = parse_matrix([(8, 2, [("fp8", "flashinfer_trtllm", None, "triton")])])
    assert c.name == "TP8_EP2_fp8_flashinfer_trtllm"
    assert c.fallback == Config(8, 2, "triton")


def test_sglang_nightly_scripts_tuples():
    """The original SGLang nightly trace scripts' CONFIGS (e.g. trace_deepseek_v31.py): quantization
    "auto" means none (no --quantization), backend None means SGLang's default (no
    --moe-runner-backend, which is "auto"); both pass the engine's checks."""
    from moetrace.engines.sglang import SGLANG_MOE_BACKENDS, SGLANG_QUANTIZATIONS
    cs = parse_matrix([(8, 2, [("fp8", "flashinfer_trtllm", None, None), ("auto", "triton", None, None),
                               ("auto", None, None, None)])])
    assert [c.name for c in cs] == ["TP8_EP2_fp8_flashinfer_trtllm", "TP8_EP2_triton", "TP8_EP2_auto"]
    assert [c.quantization for c in cs] == ["fp8", None, None] and all(c.fallback is None for c in cs)
    validate(cs, backends=SGLANG_MOE_BACKENDS, engine="sglang", quantizations=SGLANG_QUANTIZATIONS)
    (c,) = parse_matrix([(4, 1, [("fp8", "flashinfer_trtllm", "auto", None)])])
    assert c.fallback is None  # an "auto" fallback quantization is none too: nothing to fall back to
    (c,) = parse_matrix([(4, 1, [("fp8", "flashinfer_trtllm", "auto", "triton")])])
    assert c.fallback == Config(4, 1, "triton")


@pytest.mark.parametrize("entry,msg", [
    ((0, 1, ["auto"]), "tp must be a positive integer"),
    ((8, -2, ["auto"]), "ep must be a positive integer"),
    ((8, 3, ["auto"]), "ep=3 must divide tp=8"),
    ((8, 2, []), "non-empty list"),
    ((8, 2), "expected (tp, ep, [backends])"),
    (("8", 2, ["auto"]), "tp must be a positive integer"),
])
def test_invalid_entries(entry, msg):
    with pytest.raises(ConfigError) as e:
        parse_matrix([entry])
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_duplicates_rejected():
    with pytest.raises(ConfigError, match="TP8_EP2_auto appears twice"):
        parse_matrix([(8, 2, ["auto"]), (8, 2, ["auto", "triton"])])


def test_backend_checked_against_engine():
    with pytest.raises(ConfigError, match="'tritonx' is not accepted by sglang; valid: auto, "):
        validate(parse_matrix([(8, 2, ["tritonx"])]), backends=("auto", "triton"), engine="sglang")


@pytest.mark.parametrize("name", ["TP4_auto", "TP8_EP2_triton_kernel", "TP8_EP2_fp8_flashinfer_trtllm", "TP16_EP2_N2_auto"])
def test_names_round_trip(name):
    assert parse_config_name(name).name == name


SPEC = {
    "Qwen3-235B": ("Qwen/Qwen3-235B-A22B", ["TP4_auto", "TP4_triton", "TP8_EP2_auto", "TP8_EP2_triton"]),
    "Qwen3-Coder-480B": ("Qwen/Qwen3-Coder-480B-A35B-Instruct", ["TP4_auto", "TP4_triton", "TP8_EP2_auto", "TP8_EP2_triton"]),
    "DeepSeek-V3.1": ("deepseek-ai/DeepSeek-V3.1", ["TP4_auto", "TP4_triton", "TP8_EP2_auto", "TP8_EP2_triton"]),
    "MiniMax-M2": ("MiniMaxAI/MiniMax-M2", ["TP1_auto", "TP1_triton", "TP2_auto", "TP2_triton", "TP8_EP2_auto", "TP8_EP2_triton"]),
    "Kimi-K2-Thinking": ("moonshotai/Kimi-K2-Thinking", ["TP1_auto", "TP1_triton", "TP2_auto", "TP2_triton", "TP8_EP2_auto", "TP8_EP2_triton"]),
    "GLM-4.6": ("zai-org/GLM-4.6", ["TP8_EP2_auto", "TP8_EP2_triton"]),
}


def test_the_six_presets_and_their_default_matrices():
    assert {p.name: (p.hf_id, [c.name for c in parse_matrix(p.matrix)]) for p in all_presets()} == SPEC
    for p in all_presets():
        assert "--trust-remote-code" in p.extra_args("sglang")
        assert p.hf_config["architectures"]
    ds = get_preset("DeepSeek-V3.1").extra_args("sglang")
    assert ds[ds.index("--model-loader-extra-config") + 1] == '{"enable_multithread_load": true}'


def test_lookup_by_other_names():
    assert get_preset("trace_kimi_k2").name == "Kimi-K2-Thinking"
    assert get_preset("zai-org/GLM-4.6").name == "GLM-4.6"
    with pytest.raises(PresetError, match="unknown model 'Llama'; known: Qwen3-235B"):
        get_preset("Llama")


def test_user_model_file_toml(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 1000}))
    f = tmp_path / "mine.toml"
    f.write_text('name = "Mine"\nhf_id = "me/mine"\narch = "cfg.json"\nprecision = "bf16"\n'
                 'matrix = [[2, 2, ["auto"]]]\nengine_args.sglang = ["--trust-remote-code"]\n')
    p = get_preset(str(f))
    assert (p.name, p.hf_id, p.hf_config["vocab_size"]) == ("Mine", "me/mine", 1000)
    assert [c.name for c in parse_matrix(p.matrix)] == ["TP2_EP2_auto"]


def test_user_checkpoint_directory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["X"], "torch_dtype": "bfloat16"}))
    p = get_preset(str(tmp_path))
    assert p.hf_id == str(tmp_path.resolve()) and p.precision == "bf16"


def test_bad_model_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("name = ")
    with pytest.raises(PresetError, match="does not parse"):
        get_preset(str(f))
    g = tmp_path / "nohf.json"
    g.write_text('{"name": "x"}')
    with pytest.raises(PresetError, match="missing key 'hf_id'"):
        get_preset(str(g))
