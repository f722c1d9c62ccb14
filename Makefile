# The README's two commands: `make demo` (the main job) and `make test` (the tests; CI runs it).
SHELL := /bin/bash
export MOETRACE_VLLM_PYTHON ?= $(CURDIR)/.venv-engine/bin/python

.PHONY: demo test setup

setup:
	scripts/setup.sh --engine

# A sweep of tiny random-weight variants of the six models through a real engine: the vLLM CPU
# build when no GPU is here. Results in ./performance_profiles_neurips_traces/.
demo: setup
	.venv/bin/moetrace sweep --tiny $(DEMO_MODELS) $(DEMO_ARGS)

DEMO_MODELS ?= Qwen3-235B DeepSeek-V3.1
DEMO_ARGS ?= --engine-arg=--gpu-memory-utilization=0.3 --max-model-len 8192 --profile-steps 3

test:
	scripts/setup.sh --engine --system
	scripts/setup-sglang-parser.sh
	.venv/bin/python -m pytest -q -ra --durations=15 $(PYTEST_ARGS)
