#!/usr/bin/env bash
# One prepared GPU check (run on a lent CUDA machine, ~3-5 minutes):
#   1. bridge fidelity on CUDA vs onnxruntime (fp32),
#   2. a few bf16-autocast distillation steps (teacher bridge -> student bridge, KD loss),
#   3. training-step throughput of the bridge vs the plain-PyTorch module it was exported from.
# Usage: bash scripts/gpu_check.sh            (falls back to CPU when CUDA is absent, for a dry run)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # On the GPU machine a CUDA build of torch is wanted; elsewhere the pinned CPU wheel.
  if command -v nvidia-smi >/dev/null 2>&1; then .venv/bin/pip install -q torch; else .venv/bin/pip install -q "torch==2.13.0"; fi
  .venv/bin/pip install -q -e ".[test]"
fi
exec .venv/bin/python scripts/gpu_check.py "$@"
