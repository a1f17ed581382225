#!/usr/bin/env bash
# Build the Optimum peer's venv from nothing: everything `optimum-cli export onnx` needs, onnxruntime
# and onnx included (Optimum uses them to fix dynamic shapes; without them the export fails).
#   bash benchmarks/peers/optimum_venv.sh [VENV]          (default /tmp/optimum-venv)
# torch is pinned to the CPU build first (an unpinned torch pulls a multi-GB CUDA build); optimum-onnx
# 0.1.0 needs transformers < 4.58. Versions as in shared/PEERS.md. Idempotent: an existing venv
# that already imports the exporter is kept.
set -euo pipefail
VENV="${1:-/tmp/optimum-venv}"
PY="${PYTHON:-python3.11}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import optimum.exporters.onnx, onnxruntime, onnx" 2>/dev/null; then
  echo "$VENV: ready"; exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q torch==2.13.0 transformers==4.57.6 optimum-onnx==0.1.0 onnx onnxruntime==1.31.1
"$VENV/bin/python" -c "import optimum.exporters.onnx, onnxruntime, onnx, torch; print('$VENV: ready, torch', torch.__version__, 'onnxruntime', onnxruntime.__version__)"
