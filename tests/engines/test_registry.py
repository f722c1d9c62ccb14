"""The engine registry: every adapter module in moetrace.engines is found, and what the rest of
moetrace knows about an engine comes from its adapter (a new engine is one module)."""

from __future__ import annotations

import sys
import textwrap

import pytest

import moetrace.engines as package
from moetrace.engines import base, registry
from moetrace.executors.multinode import dist_init_args
from moetrace.plan import plan_config
from moetrace.presets import get_preset
from moetrace.traces import names

TOY = '''
import json

from moetrace.engines.base import Engine, register
from moetrace.traces.names import DECODE, TraceName

@register("toy")
class Toy(Engine):
    label = "Toy"
    moe_backends = ("auto",)
    ready_path = "/ready"
    mem_fraction_flags = ("--toy-memory",)
    planner_memory = "utilization"
    default_mem_fraction = 0.8
    python_module = "toyserve"
    log_rules = (("OOM", r"toy: out of pages"),)
    expert_load_source = "toy recorder"

    def capture_expert_load(self, http, base_url, out_dir, run):
        run()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "load.json"  # [pass, layer, expert]: one prefill pass of 8 tokens, top-2 of 4 experts
        path.write_text(json.dumps([[[10, 2, 2, 2]]]))
        return [path]

    @classmethod
    def expert_counts(cls, path):
        return json.loads(path.read_text())

    def command(self, spec):
        return [spec.python, "-m", "toy.serve", "--port", str(spec.port)]

    def dist_init_args(self, host, port):
        return ["--toy-leader", f"{host}:{port}"]

    @classmethod
    def parse_trace_name(cls, file_name):
        return TraceName("toy", 3, None) if file_name.startswith("toytrace") else None

    @classmethod
    def step_stage(cls, name):
        return DECODE if name == "toy_decode_step" else None

    generate = flush_cache = server_info = capture_profile = lambda *a: None
'''


def test_known_engines():
    assert registry.engine_names() == ["sglang", "vllm"]
    assert registry.default_engine("cuda") == "sglang" and registry.default_engine("cpu") == "vllm"
    with pytest.raises(ValueError, match="unknown engine"):
        registry.get_engine("nope")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy.py").write_text(textwrap.dedent(TOY))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_loaded", [])
    monkeypatch.setattr(names, "_ENGINES", [])
    monkeypatch.setattr(base, "ENGINES", dict(base.ENGINES))
    yield
    sys.modules.pop("moetrace.engines.toy", None)


def test_a_new_engine_is_one_module(toy):
    assert "toy" in registry.engine_names()
    assert registry.get_engine("toy").label == "Toy"
    assert dist_init_args("toy", "node1:5000") == ["--toy-leader", "node1:5000"]
    assert names.parse_trace_name("toytrace.json").engine == "toy"
    assert names.step_stage("toy_decode_step") == names.DECODE
    plan = plan_config(get_preset("qwen3-235b"), "TP8", engine="toy")
    assert plan.mem_fraction == 0.8 and "--toy-memory" in plan.mem_fraction_source


def test_a_new_engine_brings_its_log_rules_dump_and_memory_model(toy, tmp_path):
    """The classifier, the expert-load stage and the plan table take the toy's own knowledge from its module."""
    from types import SimpleNamespace

    from moetrace.attempt.context import Attempt
    from moetrace.attempt.expert_load import expert_load
    from moetrace.attempt.progress import Progress
    from moetrace.plan.table import format_assumptions
    from moetrace.results.classify import classify

    assert classify(exception="ServerDied", log_text="step 3\ntoy: out of pages\n").error_type == "OOM"
    assert classify(exception="ServerDied", log_text="No module named 'toyserve'").error_type == "LaunchError"
    toy = registry.get_engine("toy")
    ctx = Attempt(SimpleNamespace(name="m", hf_config={"num_experts_per_tok": 2, "num_experts": 4}, facts={}),
                  SimpleNamespace(name="TP1", ep=1, tp=1),
                  SimpleNamespace(batch_sizes=[1], seed=0, output_len=4, input_len=8, request_timeout_s=5,
                                  resolved_device=lambda: "cuda"),
                  SimpleNamespace(root=tmp_path), toy, Progress(stream=sys.stderr), adir=tmp_path / "attempt")
    session = SimpleNamespace(http=None, base_url="http://x", server=None, request=lambda **kw: None,
                              prompts=lambda **kw: [[1] * 8], model_name=lambda: "m")
    out = expert_load(ctx, session, own_launch=False)
    assert out["source"] == "toy recorder" and out["experts"] == 4 and out["stages"]["extend"]["tokens"] == 8
    plan = plan_config(get_preset("qwen3-235b"), "TP8", engine="toy")
    assert "utilization x GPU memory" in format_assumptions([plan])
