"""TFLite quantization with ai-edge-quantizer, which rewrites a .tflite file directly.

    fp16              float casting of weights (dequantized once at load; compute fp32)
    int8 dynamic      int8 per-channel weights, hybrid kernels quantize activations on the fly
    int8 static       int8 activations with ranges from a representative dataset of real text fed through
                      the signature (int32 ids at the artifact's static shape) on the FULLY_CONNECTED ops,
                      int8 weight-only embeddings; every other op stays float (see the note below)
    int4 blockwise    int4 weights in blocks of 32/64/128, int8 dynamic compute
Keeping embeddings in float adds a NO_QUANTIZE rule for EMBEDDING_LOOKUP and GATHER (a later
recipe entry overrides an earlier one for the ops it matches).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.schemes import Scheme

# Full-integer quantization of every op collapsed all-MiniLM-L6-v2 (embedding cosine 0.146, 2.4x slower
# than fp32): the additive attention mask (dtype-min at padded keys) sets the int8 range of the scores,
# so every real score rounds to one value. Quantizing only the matmul ops (FULLY_CONNECTED: activations
# in, weights per channel) keeps softmax, norms and the mask in float: cosine 0.949; also keeping the
# feed-forward down projections (their GELU inputs are heavy-tailed) in float: 0.9945 mean / 0.990 min,
# query top-1 98.4%, 0.94x fp32 latency, 38% of fp32 size (benchmarks/bench_quantize.py --target tflite).
# ffn-down is found by module scope in the tensor names litert-torch writes: the Linear of the layer's
# own `*_output` module (BERT's ResidualOutput `output`, DeBERTa's DenseNorm `output`), not the attention's.
FFN_DOWN_REGEX = r".*Layer_\d+/[^/]*_output/[^/]*Linear_dense.*"


def _rule(operation: str, algorithm: str, op_config: dict) -> dict:
    base = {"compute_precision": "FLOAT", "explicit_dequantize": False, "skip_checks": False,
            "min_weight_elements": 0}
    return {"regex": ".*", "operation": operation, "algorithm_key": algorithm, "op_config": {**base, **op_config}}


def _weights(bits: int, granularity: str, dtype: str = "INT") -> dict:
    return {"num_bits": bits, "symmetric": True, "granularity": granularity, "dtype": dtype}


def recipe_for(scheme: Scheme, keep_float: list) -> list:
    """The ai-edge-quantizer recipe (a list of rules, later ones win) for a scheme."""
    if scheme.weights == "fp16":
        rules = [_rule("*", "float_casting", {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                                              "explicit_dequantize": True})]
    elif scheme.weights == "int8" and scheme.activations == "int8-static":
        granularity = "CHANNELWISE" if scheme.granularity == "channel" else "TENSORWISE"
        rules = [_rule("*", "no_quantize", {}),
                 _rule("FULLY_CONNECTED", "min_max_uniform_quantize", {
                     "activation_tensor_config": {"num_bits": 8, "symmetric": False, "granularity": "TENSORWISE",
                                                  "dtype": "INT"},
                     "weight_tensor_config": _weights(8, granularity), "compute_precision": "INTEGER"}),
                 _rule("EMBEDDING_LOOKUP", "min_max_uniform_quantize",
                       {"weight_tensor_config": _weights(8, "CHANNELWISE"), "compute_precision": "INTEGER"})]
        if "ffn-down" in keep_float:
            rules.append({**_rule("FULLY_CONNECTED", "no_quantize", {}), "regex": FFN_DOWN_REGEX})
    else:
        bits, gran = (8, "CHANNELWISE") if scheme.weights == "int8" else (4, f"BLOCKWISE_{scheme.block_size}")
        rules = [_rule("*", "min_max_uniform_quantize", {"weight_tensor_config": _weights(bits, gran),
                                                         "compute_precision": "INTEGER"})]
    if "embeddings" in keep_float:
        rules += [_rule(op, "no_quantize", {}) for op in ("EMBEDDING_LOOKUP", "GATHER")]
    return rules


def _signature_feeds(src: Path, feeds: list) -> tuple:
    """Feed dicts -> (signature key, dicts keyed by the signature's input names, in its dtypes)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(src))
    key = next(iter(interp.get_signature_list()))
    details = interp.get_signature_runner(key).get_input_details()
    return key, [{n: np.asarray(f[n]).astype(d["dtype"]) for n, d in details.items()} for f in feeds]


def quantize_tflite(src: Path, dst: Path, scheme: Scheme, keep_float: list, calib: list) -> dict:
    """Quantize the .tflite at `src` into `dst` with ai-edge-quantizer (recipe_for(scheme, keep_float)).

    keep_float: policy group names kept in float (embeddings, ffn-down); calib: feed dicts {input name:
    int array (1, S)} for int8-static calibration (ignored otherwise). Returns converter notes
    {ai_edge_quantizer version, tool, calibration_samples}. Raises EdgeportError when ai-edge-quantizer
    is missing, or int8-static has no calibration feeds.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from ai_edge_quantizer import quantizer
        import ai_edge_quantizer
    except ImportError:
        raise EdgeportError("TFLite quantization needs ai-edge-quantizer: pip install ai-edge-quantizer") from None
    q = quantizer.Quantizer(str(src), recipe_for(scheme, keep_float))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):  # progress bars
        result = None
        if q.need_calibration:
            if not calib:
                raise EdgeportError("int8-static needs calibration text and the artifact has no tokenizer")
            key, data = _signature_feeds(src, calib)
            result = q.calibrate({key: data}, num_threads=os.cpu_count() or 1)
        out = q.quantize(result, enable_progress_report=False)
        out.export_model(str(dst), overwrite=True)
    version = getattr(ai_edge_quantizer, "__version__", None)
    if version is None:
        from importlib.metadata import version as _v

        version = _v("ai-edge-quantizer")
    return {"ai_edge_quantizer": version, "tool": "ai_edge_quantizer.Quantizer",
            "calibration_samples": len(calib) if q.need_calibration else 0}
