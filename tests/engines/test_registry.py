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
