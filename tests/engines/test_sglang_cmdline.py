"""Every SGLang command line moetrace generates passes SGLang's own parser, meaning what we meant.

SGLang cannot run here, but its argument parser can: scripts/setup-sglang-parser.sh builds
.venv-sglang (torch CPU + ``sglang --no-deps`` + the modules ``sglang.srt.server_args`` imports).
One subprocess (tests/engines/sglang_parse.py, in that environment) parses all commands at once:
the six presets' default matrices, the fallback/quantization form, a two-node config (ranks 0
and 1), the CPU/context-length options and the user's extra arguments.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from moetrace.engines.base import LaunchSpec
from moetrace.engines.sglang import SGLANG_MOE_BACKENDS, SGLANG_QUANTIZATIONS, SGLang
from moetrace.matrix import Config, ConfigError, parse_matrix, validate
from moetrace.presets import all_presets, get_preset

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("sglang_parse.py")
BAD_BACKEND_SAMPLE = ROOT / "tests" / "data" / "sglang_parser" / "bad_backend.txt"
SGLANG_VERSION = "0.5.23"  # what scripts/setup-sglang-parser.sh pins
SETUP_HINT = "SGLang's parser is not installed: run scripts/setup-sglang-parser.sh (builds .venv-sglang)"
DEEPSEEK_LOADER_CONFIG = {"enable_multithread_load": True}


def sglang_python() -> Path | None:
    p = Path(os.environ.get("MOETRACE_SGLANG_PYTHON") or ROOT / ".venv-sglang" / "bin" / "python")
    return p if p.exists() else None


@dataclass
class Case:
    id: str
    spec: LaunchSpec
    overrides: dict[str, Any] = field(default_factory=dict)  # what the user's extra args change

    @property
    def command(self) -> list[str]:
        return SGLang().command(self.spec)

    def expected(self) -> dict[str, Any]:
        """The parsed values (argparse dests) moetrace means by this spec."""
        s, c = self.spec, self.spec.config
        extras = s.preset.extra_args("sglang")
        return {
            "model_path": s.model_path, "host": s.host, "port": s.port,
            "tp_size": c.tp, "ep_size": c.ep, "moe_runner_backend": c.backend, "quantization": c.quantization,
            "trust_remote_code": "--trust-remote-code" in extras,
            "nnodes": c.nodes, "node_rank": s.node_rank if c.nodes > 1 else 0,
            "dist_init_addr": s.dist_init_addr if c.nodes > 1 else None,
            "device": "cpu" if s.device == "cpu" else None,  # SGLang picks the GPU itself
            "context_length": s.max_model_len,
        } | self.overrides


def _spec(preset, config: Config, n: int, **kw) -> LaunchSpec:
    # host and port differ from SGLang's defaults (127.0.0.1:30000) so the parse proves they were passed
    return LaunchSpec(preset=preset, config=config, model_path=preset.hf_id, port=31000 + n, host="10.1.2.3", **kw)


def build_cases() -> list[Case]:
    cases: list[Case] = []

    def add(id_: str, preset, config: Config, overrides: dict[str, Any] | None = None, **kw) -> None:
        cases.append(Case(id_, _spec(preset, config, len(cases), **kw), overrides or {}))

    for p in all_presets():
        for c in parse_matrix(p.matrix):
            add(f"{p.slug}-{c.name}", p, c)
            if c.fallback:
                add(f"{p.slug}-{c.name}-fallback", p, c.fallback)

    ds = get_preset("DeepSeek-V3.1")
    (quant,) = parse_matrix([(8, 2, [("fp8", "flashinfer_trtllm", None, "triton")])])
    add("quantized-primary", ds, quant)
    add("quantized-fallback", ds, quant.fallback)

    (multi,) = parse_matrix([{"tp": 16, "ep": 2, "nodes": 2}])
    for rank in (0, 1):
        add(f"two-nodes-rank{rank}", ds, multi, nnodes=2, node_rank=rank, dist_init_addr="10.0.0.1:50000")

    qwen = get_preset("Qwen3-235B")
    tp8_triton = Config(8, 2, "triton")
    add("cpu-context-length", qwen, Config(1, 1, "auto"), device="cpu", max_model_len=8192)
    add("mem-fraction", qwen, tp8_triton, mem_fraction=0.8, overrides={"mem_fraction_static": 0.8})
    add("user-extras", qwen, tp8_triton, max_model_len=8192, mem_fraction=0.7,
        extra_args=["--mem-fraction-static", "0.85", "--load-format", "dummy", "--disable-cuda-graph",
                    "--context-length", "4096"],
        overrides={"context_length": 4096})  # the user's, after moetrace's --context-length 8192
    add("launch-prefix", qwen, tp8_triton, python="/opt/sglang/bin/python", prefix=["docker", "exec", "sgl"])
    # --expert-load: the recorder that /start|stop|dump_expert_distribution_record need, with a buffer
    # that holds every forward pass of the recorded request (-1: unbounded)
    add("expert-load", qwen, Config(2, 2, "auto"), expert_load_dir=Path("/tmp/results/attempts/a/expert_load"),
        overrides={"expert_distribution_recorder_mode": "stat", "expert_distribution_recorder_buffer_size": -1})
    return cases


CASES = build_cases()
BAD_BACKEND_CASE = Case("bad-backend", _spec(get_preset("Qwen3-235B"), Config(4, 1, "tritonx"), 99))
# In SGLang 0.5.23 `--cuda-graph-max-bs` (quoted in engines.md) is a prefix of two newer flags: rejected.
PROBES = {"ambiguous-cuda-graph-max-bs": ["--model-path", "m", "--cuda-graph-max-bs", "64"]}


def server_argv(cmd: list[str]) -> list[str]:
    """What follows ``-m sglang.launch_server``: the arguments SGLang's parser sees."""
    for i in range(len(cmd) - 1):
        if cmd[i] == "-m" and cmd[i + 1] == "sglang.launch_server":
            return cmd[i + 2:]
    raise AssertionError(f"no '-m sglang.launch_server' in {cmd}")


@pytest.fixture(scope="module")
def sglang() -> dict[str, Any]:
    """SGLang's parser's answers for every case, keyed by case id, from one subprocess."""
    py = sglang_python()
    if py is None:
        if os.environ.get("CI"):
            pytest.fail(SETUP_HINT)
        pytest.skip(SETUP_HINT)
    ids = [c.id for c in CASES] + [BAD_BACKEND_CASE.id] + list(PROBES)
    argvs = [server_argv(c.command) for c in [*CASES, BAD_BACKEND_CASE]] + list(PROBES.values())
    cp = subprocess.run([str(py), str(HELPER)], input=json.dumps({"argvs": argvs}), capture_output=True,
                        text=True, timeout=300)
    assert cp.returncode == 0, f"{HELPER.name} failed:\n{cp.stderr[-3000:]}"
    out = json.loads(cp.stdout)
    out["by_id"] = dict(zip(ids, out["results"], strict=True))
    return out


def test_cases_cover_the_six_presets_default_matrices():
    presets = all_presets()
    assert len(presets) == 6
    for p in presets:
        names = {c.spec.config.name for c in CASES if c.spec.preset is p and c.id.startswith(p.slug)}
        assert names == {c.name for c in parse_matrix(p.matrix)}, p.name


def test_parser_is_the_pinned_sglang(sglang):
    assert sglang["sglang_version"] == SGLANG_VERSION


def test_moe_backends_equal_the_parsers_choices(sglang):
    assert tuple(sglang["moe_runner_backend_choices"]) == SGLANG_MOE_BACKENDS
    assert SGLang.moe_backends == SGLANG_MOE_BACKENDS


def test_quantizations_equal_the_parsers_choices(sglang):
    assert tuple(sglang["quantization_choices"]) == SGLANG_QUANTIZATIONS


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sglang_parses_the_command_as_meant(sglang, case):
    res = sglang["by_id"][case.id]
    assert res["exit_code"] == 0, f"SGLang's parser rejected {SGLang.shell_line(case.command)}:\n{res['stderr'][-1500:]}"
    args = res["args"]
    got = {k: args[k] for k in case.expected()}
    assert got == case.expected()
    loader = json.loads(args["model_loader_extra_config"])
    assert loader == (DEEPSEEK_LOADER_CONFIG if case.spec.preset.name == "DeepSeek-V3.1" else {})


def test_every_preset_asks_sglang_to_trust_remote_code(sglang):
    for case in CASES:
        assert sglang["by_id"][case.id]["args"]["trust_remote_code"] is True, case.id


def test_quantization_is_one_sglang_knows(sglang):
    assert "fp8" in sglang["quantization_choices"]
    assert sglang["by_id"]["quantized-primary"]["args"]["quantization"] == "fp8"
    assert sglang["by_id"]["quantized-fallback"]["args"]["quantization"] is None


def test_users_extra_args_come_last_and_win(sglang):
    args = sglang["by_id"]["user-extras"]["args"]
    assert (args["mem_fraction_static"], args["load_format"], args["disable_cuda_graph"]) == (0.85, "dummy", True)
    assert args["context_length"] == 4096  # the user's, after moetrace's --context-length 8192


def test_launch_prefix_and_python_come_before_the_module():
    case = next(c for c in CASES if c.id == "launch-prefix")
    assert case.command[:5] == ["docker", "exec", "sgl", "/opt/sglang/bin/python", "-m"]


def test_bad_backend_is_rejected_by_sglang_and_by_moetrace_first(sglang):
    res = sglang["by_id"]["bad-backend"]
    assert res["exit_code"] == 2 and res["args"] is None
    last = res["stderr"].strip().splitlines()[-1]
    assert "error: argument --moe-runner-backend: invalid choice: 'tritonx'" in last
    # the committed sample is what this parser says, word for word
    assert BAD_BACKEND_SAMPLE.read_text().strip().splitlines()[-1] == last
    with pytest.raises(ConfigError, match="tritonx"):
        validate([BAD_BACKEND_CASE.spec.config], backends=SGLang.moe_backends, engine="sglang")


def test_old_cuda_graph_max_bs_flag_is_rejected_by_sglang_0_5_23(sglang):
    res = sglang["by_id"]["ambiguous-cuda-graph-max-bs"]
    assert res["exit_code"] == 2
    assert "ambiguous option: --cuda-graph-max-bs could match" in res["stderr"]


RECORDER_FLAGS = ["--expert-distribution-recorder-mode", "stat", "--expert-distribution-recorder-buffer-size", "-1"]


def _has_recorder(cmd: list[str]) -> bool:
    return any(cmd[i:i + len(RECORDER_FLAGS)] == RECORDER_FLAGS for i in range(len(cmd)))


def test_expert_load_is_counted_in_a_second_launch_the_measured_one_runs_without_the_recorder(tmp_path):
    """The recorder's kernels sit in SGLang's CUDA graph of every decode step (GPU run 3): a single-node
    --expert-load run measures a launch without them and counts the load in a second launch with them.
    Multi-node configs (every node launches with the same options) and external servers keep it."""
    from dataclasses import replace

    from moetrace.engines.vllm import VLLM
    from moetrace.executors.multinode import launch_plan
    from moetrace.attempt import RunOptions, launch_options

    qwen, engine = get_preset("Qwen3-235B"), SGLang()
    opts = RunOptions(engine="sglang", device="cuda", engine_python="/env/bin/python", expert_load=True)
    raw = tmp_path / "attempts" / "a" / "profiler_raw"

    def launch(config: Config, o: RunOptions) -> tuple[list[str], dict[str, str]]:
        spec = LaunchSpec.from_options(qwen, config, o, port=30000, device="cuda", profile_dir=raw)
        return engine.command(spec), engine.environment(spec)

    measured, recorder = launch_options(engine, Config(2, 2), opts)
    cmd, env = launch(Config(2, 2), measured)
    assert not _has_recorder(cmd) and "SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR" not in env
    cmd, env = launch(Config(2, 2), recorder)
    assert _has_recorder(cmd) and env["SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR"] == str(raw.parent / "expert_load")
    assert launch_options(engine, Config(2, 2), replace(opts, expert_load=False))[1] is None
    # vLLM on GPUs: a second launch with --enable-return-routed-experts; its CPU build refuses the flag: no launch
    assert launch_options(VLLM(), Config(2, 2), replace(opts, engine="vllm"))[1] is not None
    assert launch_options(VLLM(), Config(2, 2), replace(opts, engine="vllm", device="cpu"))[1] is None

    multi = Config(16, 2, nodes=2)
    assert launch_options(engine, multi, opts) == (opts, None)
    assert _has_recorder(launch(multi, opts)[0])  # rank 0, as the runner launches it
    nodes = launch_plan(qwen, multi, opts, ["gpu01", "gpu02"], "10.0.0.1:50000", port=30000,
                        profile_dirs={1: tmp_path / "node1" / "profiler_raw"})
    assert _has_recorder(nodes[1].command)  # the other node, as its Slurm task launches it
    assert launch_options(engine, Config(2, 2), replace(opts, base_url="http://gpu01:30000"))[1] is None


def test_dry_run_prints_the_measured_command_and_the_recorders_second_one(tmp_path):
    from tests.conftest import moetrace
    cp = moetrace("run", "Qwen3-235B", "-c", "TP2_EP2_auto", "--expert-load", "--dry-run", "--engine", "sglang",
                  "--gpu", "h200", "-r", str(tmp_path / "r"))
    assert cp.returncode == 0, cp.stderr
    measured, recorder = [line for line in cp.stdout.splitlines() if "sglang.launch_server" in line]
    assert measured.startswith("  SGLANG_TORCH_PROFILER_DIR=") and not _has_recorder(shlex.split(measured))
    assert recorder.startswith("  expert load (a second launch, recorder on): ")
    assert _has_recorder(shlex.split(recorder)) and "SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR=" in recorder
