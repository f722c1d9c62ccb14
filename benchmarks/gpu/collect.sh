#!/usr/bin/env bash
# Runs on the GPU machine (the device tool), from the repository root; writes under $OUT.
#   collect.sh single   one GPU: TP1 traces in SGLang style (EXTEND + DECODE files) and vLLM style,
#                       then one big decode trace for benchmarks/trace_analysis.py (xz, split in parts)
#   collect.sh tp2      two GPUs: TP2 shard traces with NCCL all-reduce, SGLang and vLLM style
# What comes back is limited (8 files, 16 MiB each): fixtures travel as one tarball, written
# before the big run so that they come back even if it fails. Every run is under a timeout.
# Dry run on CPU: OUT=/tmp/o PY=/path/to/python EXTRA="--device cpu --tiny --prefill-tokens 256" BIG_MB=4 collect.sh single
set -euo pipefail
mode=${1:?single or tp2}
OUT=${OUT:?}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
W=/tmp/work; rm -rf "$W"; mkdir -p "$W/fx"
PY=${PY:-python3}
script="benchmarks/gpu/moe_layer_trace.py ${EXTRA:-}"
quiet() { grep -v USDT || true; }
say() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.device_count())'
  free -g; command -v xz zstd || true; } 2>&1 | tee "$OUT/env.txt"

if [ "$mode" = single ]; then
  say tp1_sglang
  timeout -s KILL 150 $PY $script --out "$W/fx/tp1_sglang" --style sglang --prefix qwen3-235b-tp1 --decode-steps 8 2>&1 | quiet
  say tp1_vllm
  timeout -s KILL 150 $PY $script --out "$W/fx/tp1_vllm" --style vllm --decode-steps 8 2>&1 | quiet
  tar -C "$W" -czf "$OUT/fixtures-$mode.tar.gz" fx
  # one big decode-only trace, uncompressed, sized from the 8-step decode fixture
  per=$(( $(zcat "$W"/fx/tp1_sglang/*DECODE.trace.json.gz | wc -c) / 8 ))
  steps=$(( ${BIG_MB:-520} * 1000000 / per + 1 )); [ $steps -gt 3000 ] && steps=3000
  say "bytes per decode step $per, big run of $steps steps"
  timeout -s KILL 240 $PY $script --out "$W/big" --only decode --decode-steps $steps --no-gzip --prefix big 2>&1 | quiet | tail -1 | cut -c1-300
  ls -la "$W"/big/ | tee -a "$OUT/progress.txt"
  say pack
  timeout -s KILL 90 $PY benchmarks/gpu/pack.py "$OUT" big "$W"/big/*.trace.json
else
  launch="$PY -m torch.distributed.run --nproc-per-node 2"
  say tp2_sglang
  timeout -s KILL 180 $launch $script --out "$W/fx/tp2_sglang" --shard-tp 2 --style sglang --prefix qwen3-235b-tp2 --decode-steps 8 2>&1 | quiet
  say tp2_vllm
  timeout -s KILL 180 $launch $script --out "$W/fx/tp2_vllm" --shard-tp 2 --style vllm --decode-steps 8 2>&1 | quiet
  tar -C "$W" -czf "$OUT/fixtures-$mode.tar.gz" fx
fi
say done
ls -la "$OUT"
