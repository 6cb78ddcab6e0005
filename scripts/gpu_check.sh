#!/usr/bin/env bash
# One prepared GPU check (run on a lent CUDA machine, ~3-5 minutes); exit 1 when a check fails:
#   1. bridge fidelity on CUDA vs onnxruntime (fp32, <= 1e-4 relative),
#   2. `onnxkd.distill` for a few bf16-autocast epochs on a pruned student (finite losses),
#   3. training-step time of the bridge vs the native module, and distillation throughput of onnxkd vs a
#      hand-written PyTorch KD loop (benchmarks/distill_throughput.py).
# Usage: bash scripts/gpu_check.sh [--rounds 30]     (fails without CUDA; --allow-cpu for a dry run)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] && python3 -c "import torch, onnxruntime, onnx_ir, onnxsim; assert torch.cuda.is_available()" 2>/dev/null; then
  # A prepared CUDA machine whose python already holds torch (and nothing to fetch from): no venv needed.
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  exec python3 scripts/gpu_check.py "$@"
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # On the GPU machine a CUDA build of torch is wanted; elsewhere the pinned CPU wheel.
  if command -v nvidia-smi >/dev/null 2>&1; then .venv/bin/pip install -q torch; else .venv/bin/pip install -q "torch==2.13.0"; fi
  .venv/bin/pip install -q -e ".[test]"
fi
exec .venv/bin/python scripts/gpu_check.py "$@"
