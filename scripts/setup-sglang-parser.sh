#!/usr/bin/env bash
# Build .venv-sglang: just enough of SGLang to run its own command-line parser
# (sglang.srt.server_args.ServerArgs.add_cli_args + argparse), so the tests can check every
# command line moetrace generates for SGLang (tests/engines/test_sglang_cmdline.py).
# No GPU, no server: torch's CPU build, sglang itself without its dependencies, and only the
# modules `import sglang.srt.server_args` asks for (found by importing it until it stopped failing).
# Idempotent: a second run checks the import and exits. Usage: scripts/setup-sglang-parser.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-sglang

SGLANG_VERSION=0.5.23
TORCH_VERSION=2.13.0   # the CPU wheel lies in the local wheel store (pip finds it offline)
# What `import sglang.srt.server_args` imports at module level in SGLang 0.5.23, pinned to the
# versions that worked (triton is by far the largest: ~1 GB unpacked, but utils/common.py imports it).
IMPORT_DEPS=(
  numpy==2.4.6 orjson==3.13.0 psutil==7.2.2 pybase64==1.5.1 requests==2.34.2 triton==3.9.0
  packaging==26.4 pillow==13.0.0 starlette==1.10.0 msgspec==0.22.0 pydantic==2.14.4
  pyzmq==27.3.0 tqdm==4.70.1 ipython==9.18.1 aiohttp==3.14.5
)
KEY="sglang==$SGLANG_VERSION torch==$TORCH_VERSION ${IMPORT_DEPS[*]}"
CHECK='import argparse, sglang.srt.server_args as s; s.ServerArgs.add_cli_args(argparse.ArgumentParser())'

if [ "$(cat "$VENV/.moetrace-setup" 2>/dev/null)" = "$KEY" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
  echo "setup-sglang-parser: $VENV is up to date (sglang $SGLANG_VERSION parser imports)"
  exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-sglang-parser: creating $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/pip" install -q --disable-pip-version-check)
echo "setup-sglang-parser: installing torch==$TORCH_VERSION (CPU build)"
"${pip[@]}" "torch==$TORCH_VERSION"
echo "setup-sglang-parser: installing the modules SGLang's server_args import needs: ${IMPORT_DEPS[*]}"
"${pip[@]}" "${IMPORT_DEPS[@]}"
echo "setup-sglang-parser: installing sglang==$SGLANG_VERSION --no-deps"
"${pip[@]}" --no-deps "sglang==$SGLANG_VERSION"

echo "setup-sglang-parser: checking that SGLang's parser builds"
if ! "$VENV/bin/python" -c "$CHECK"; then
  echo "setup-sglang-parser: 'import sglang.srt.server_args' failed (see above); a module may be missing" >&2
  exit 1
fi
echo "$KEY" > "$VENV/.moetrace-setup"
echo "setup-sglang-parser: done in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1) in $VENV)"
