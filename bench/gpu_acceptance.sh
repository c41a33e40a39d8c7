#!/usr/bin/env bash
# GPU acceptance of the real-size path on one GPU (<= 8 minutes): bf16 throughput and MFU of LXMERT-base at
# batch 32 and 64, peak GPU memory, the masked step's overhead, whether the loader keeps the GPU busy, and
# whether two runs give the same losses. `--dry` checks the same code on a CPU (tiny model, a few images).
#   bash bench/gpu_acceptance.sh --json gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" TOKENIZERS_PARALLELISM=false
if [[ " $* " != *" --dry "* ]]; then
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
fi
exec timeout 480 python bench/gpu_acceptance.py "$@"
