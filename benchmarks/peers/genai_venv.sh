#!/usr/bin/env bash
# Build the onnxruntime-genai peer's venv from nothing: its model builder
# (`python -m onnxruntime_genai.models.builder -m CKPT -o OUT -p fp32|int4 -e cpu`) and its runtime.
#   bash benchmarks/peers/genai_venv.sh [VENV]            (default /tmp/genai-venv)
# torch is pinned to the CPU build first (an unpinned torch pulls a multi-GB CUDA build). The builder
# reads the checkpoint with transformers and writes the graph with onnx / onnxscript; int4 uses
# onnxruntime's MatMulNBits quantizer. Idempotent.
set -euo pipefail
VENV="${1:-/tmp/genai-venv}"
PY="${PYTHON:-python3.11}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import onnxruntime_genai, onnxruntime_genai.models.builder, transformers" 2>/dev/null; then
  echo "$VENV: ready"; exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q torch==2.13.0 transformers==5.23.0 onnxruntime-genai==0.18.0 onnx onnxscript onnxruntime==1.31.1
"$VENV/bin/python" -c "import onnxruntime_genai as og, onnxruntime_genai.models.builder, onnxruntime, torch; print('$VENV: ready, genai', og.__version__, 'torch', torch.__version__)"
