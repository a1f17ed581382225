"""Reference -> TFLite with static shapes and builtin ops only.

Route: the family's Keras 3 reference (same weights) -> tf.function with int32 inputs ->
TFLiteConverter restricted to TFLITE_BUILTINS. Chosen over litert-torch for MobileBERT because the
Keras graph is written for TFLite (2-D activations so each projection is one FULLY_CONNECTED, the
attention scale folded into the queries, one constant MLM matrix, one padding bias for all layers),
it needs no JAX/torchao stack, and the converter is told to fail rather than emit Flex (TF) ops.
Benchmarks: benchmarks/bench_mobilebert.py.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.export.contracts import Contract
from edgeport.export.lowerings import Lowered
from edgeport.export.tflite_torch import export_tflite_decoder, export_tflite_torch


# Tasks the Keras references build (mobilebert_keras.py); other heads take the litert-torch route.
KERAS_TASKS = ("feature-extraction", "fill-mask", "text-classification", "token-classification", "question-answering")


def keras_builder(family):
    """The family's Keras builder, imported from its "module:function" name; EdgeportError when the
    family has none or TensorFlow/Keras 3 are not installed."""
    if not family.keras_build:
        raise EdgeportError(f"family '{family.name}' has no TFLite route yet (it needs a Keras reference)")
    module, fn = family.keras_build.split(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except ImportError as e:
        raise EdgeportError(f"TFLite export needs TensorFlow and Keras 3: pip install 'edgeport[tflite]' ({e})") from None


def numpy_state_dict(model) -> dict:
    """float32 numpy copies of the model's parameters and buffers, by state_dict key."""
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def convert(keras_model, contract: Contract, batch: int, seq: int) -> bytes:
    """A Keras model over int32 (batch, seq) inputs -> .tflite bytes (builtin ops only, a
    `serving_default` signature with the contract's names). EdgeportError when conversion fails."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = [tf.TensorSpec((batch, seq), tf.int32, name=n) for n in contract.inputs]
    @tf.function(input_signature=spec)
    def traced(*args):
        return tuple(keras_model(list(args)))

    # Weights become constants (so projections lower to FULLY_CONNECTED, not variable reads) ...
    frozen = convert_variables_to_constants_v2(traced.get_concrete_function())

    @tf.function(input_signature=spec)
    def serve(*args):
        return {n: o for n, o in zip(contract.outputs, frozen(*args))}

    module = tf.Module()
    # ... and go through a SavedModel so the .tflite keeps a signature with the contract's I/O names.
    with tempfile.TemporaryDirectory() as sm:
        tf.saved_model.save(module, sm, signatures=serve.get_concrete_function())
        conv = tf.lite.TFLiteConverter.from_saved_model(sm)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # builtin ops only, never Flex
        try:
            return conv.convert()
        except Exception as e:  # converter errors are ConverterError with long logs
            raise EdgeportError(f"TFLite conversion failed: {str(e).strip().splitlines()[-1][:300]}") from None


def export_tflite(ref, contract, out_dir: Path, batch: int, seq: int, model=None) -> Lowered:
    """The reference (or `model`, a lowering's swapped copy) -> `out_dir/model.tflite` at static shapes.

    Decoders: prefill/decode signatures over a static cache (tflite_torch.export_tflite_decoder).
    Encoders: the family's Keras reference when it has one and builds the task (KERAS_TASKS), and not
    for a swapped model; else litert-torch. Inputs int32 (batch, seq). Raises EdgeportError when a converter
    is missing or fails.
    """
    what = ref.family.name
    if contract.kind == "decoder":
        return export_tflite_decoder(model or ref.model, contract, out_dir, batch, seq, what)
    if model is not None or not ref.family.keras_build or ref.task not in KERAS_TASKS:
        return export_tflite_torch(model or ref.model, contract, out_dir, batch, seq, what)
    build = keras_builder(ref.family)
    km = build(ref.config, ref.task, numpy_state_dict(ref.model), batch, seq)
    (out_dir / "model.tflite").write_bytes(convert(km, contract, batch, seq))
    import keras
    import tensorflow as tf

    return Lowered("model.tflite", {"tensorflow": tf.__version__, "keras": keras.__version__,
                                    "route": "keras3 + TFLiteConverter (TFLITE_BUILTINS)",
                                    "static_shape": [batch, seq], "input_dtype": "int32"})


def keras_outputs(ref, contract: Contract, feeds: dict, batch: int, seq: int) -> dict:
    """The Keras reference on numpy feeds (tests compare it with the PyTorch reference)."""
    build = keras_builder(ref.family)
    km = build(ref.config, ref.task, numpy_state_dict(ref.model), batch, seq)
    outs = km([feeds[n].astype(np.int32) for n in contract.inputs])
    return {n: np.asarray(o) for n, o in zip(contract.outputs, outs)}


def op_names(path: str | Path) -> set:
    """Operator names in a .tflite file (custom and Flex ops show up by name)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    return {d["op_name"] for d in interp._get_ops_details()}
