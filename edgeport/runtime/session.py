"""One thin Session API over the backends: onnxruntime (.onnx), LiteRT (.tflite), TensorRT (.engine/.plan).

Imports only numpy and the backend it runs; never torch, TensorFlow or the export stage.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError


@dataclass
class IOSpec:
    """One artifact input or output as the backend reports it."""

    name: str
    dtype: str  # numpy dtype name
    shape: list  # ints; strings or None for dynamic dims


_ORT_TYPES = {"tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(float)": "float32",
              "tensor(float16)": "float16", "tensor(bool)": "bool", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


def default_threads() -> int:
    """Intra-op threads: $EDGEPORT_THREADS when set and non-zero, else every core."""
    return int(os.environ.get("EDGEPORT_THREADS", "0")) or (os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """The thread count a session opens with: `threads`, or default_threads() when None. Raises EdgeportError
    for a count below 1 (onnxruntime would take 0 as its own default and a negative one without a word)."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise EdgeportError(f"--threads must be at least 1, got {threads!r}")
    return threads


class Session:
    """`inputs`, `outputs` (lists of IOSpec) and `run(feeds) -> {name: array}`."""

    backend = ""
    inputs: list
    outputs: list

    def run(self, feeds: dict) -> dict:
        """feeds {input name: array} -> {output name: array}; EdgeportError on a missing input or a wrong
        rank/static dim."""
        raise NotImplementedError

    def _check_feeds(self, feeds: dict) -> dict:
        out = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise EdgeportError(f"missing input '{spec.name}'; the artifact takes "
                                    f"{', '.join(s.name for s in self.inputs)}")
            a = np.asarray(feeds[spec.name])
            if a.ndim != len(spec.shape):
                raise EdgeportError(f"input '{spec.name}' has rank {a.ndim}, expected {len(spec.shape)}")
            for i, (got, want) in enumerate(zip(a.shape, spec.shape)):
                if isinstance(want, int) and want > 0 and got != want:
                    raise EdgeportError(f"input '{spec.name}' has shape {list(a.shape)}, the artifact "
                                        f"takes {spec.shape} (dim {i} is static)")
            out[spec.name] = np.ascontiguousarray(a.astype(spec.dtype, copy=False))
        return out


_SESSION_CONFIG: dict = {}  # onnxruntime session config entries every ort_session applies (see below)


@contextlib.contextmanager
def ort_session_config(entries: dict):
    """While active, every `ort_session` adds these onnxruntime session config entries ({"session.
    disable_prepacking": "1"}, onnxruntime's onnxruntime_session_options_config_keys.h names). Used by the
    streaming export's validation, so weights stay memory-mapped instead of being packed into copies."""
    old = dict(_SESSION_CONFIG)
    _SESSION_CONFIG.update(entries)
    try:
        yield
    finally:
        _SESSION_CONFIG.clear()
        _SESSION_CONFIG.update(old)


def ort_session(model, threads: int | None = None, providers=None, custom_op_library: str | None = None):
    """The one place an onnxruntime InferenceSession is opened.

    model: a .onnx path (external data beside it is found) or a serialized ModelProto (bytes).
    threads: intra-op threads (default `default_threads()`); providers: onnxruntime provider names, fastest
    first (default: TensorRT, CUDA where this build has them, CPU last); custom_op_library: path of a shared
    library of custom-op kernels (e.g. onnxruntime-extensions') registered before loading.
    Raises EdgeportError when onnxruntime cannot load the model (one line, its first message line).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = resolve_threads(threads)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if custom_op_library:
        so.register_custom_ops_library(custom_op_library)
    for key, value in _SESSION_CONFIG.items():
        so.add_session_config_entry(key, str(value))
    available = ort.get_available_providers()
    preferred = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = providers or [p for p in preferred if p in available] or available
    name = "<in-memory graph>" if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else name, so, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise EdgeportError(f"{name}: onnxruntime cannot load it ({str(e).splitlines()[0][:300]})") from None


class OrtSession(Session):
    """A Session over onnxruntime; arguments as `ort_session` (model: path or serialized ModelProto)."""

    backend = "onnxruntime"

    def __init__(self, path, providers=None, threads: int | None = None, custom_op_library: str | None = None):
        self.sess = ort_session(path, threads, providers, custom_op_library)
        self.providers = self.sess.get_providers()
        self.inputs = [IOSpec(i.name, _ORT_TYPES.get(i.type, i.type), list(i.shape)) for i in self.sess.get_inputs()]
        self.outputs = [IOSpec(o.name, _ORT_TYPES.get(o.type, o.type), list(o.shape)) for o in self.sess.get_outputs()]

    def run(self, feeds: dict) -> dict:
        """feeds {input name: array} (cast to the input dtypes) -> {output name: numpy array}."""
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.sess.run(names, self._check_feeds(feeds))))


class LiteRTSession(Session):
    """Runs one signature of a .tflite (named I/O): `signature_key` (the manifest's), else the file's
    first; a file without signatures runs in tensor order. EdgeportError when the key is not in the file."""

    backend = "litert"

    def __init__(self, path: str | Path, threads: int | None = None, signature_key: str | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise EdgeportError("running .tflite needs ai-edge-litert: pip install 'edgeport[litert]'") from None
        try:
            self.interp = Interpreter(model_path=str(path), num_threads=resolve_threads(threads))
        except (ValueError, RuntimeError) as e:
            raise EdgeportError(f"{path}: LiteRT cannot load it ({str(e).splitlines()[0][:300]})") from None
        sigs = self.interp.get_signature_list()
        if signature_key is not None and signature_key not in sigs:
            raise EdgeportError(f"{path}: no signature '{signature_key}' (has {', '.join(sigs) or 'none'})")
        if sigs:
            self.runner = self.interp.get_signature_runner(signature_key or next(iter(sigs)))
            ins, outs = self.runner.get_input_details(), self.runner.get_output_details()
        else:
            self.runner = None
            self.interp.allocate_tensors()
            ins = {_clean(d["name"]): d for d in self.interp.get_input_details()}
            outs = {_clean(d["name"]): d for d in self.interp.get_output_details()}
        self._out_index = {n: d["index"] for n, d in outs.items()}
        self._in_index = {n: d["index"] for n, d in ins.items()}
        self.inputs = [IOSpec(n, np.dtype(d["dtype"]).name, [int(x) for x in d["shape"]]) for n, d in ins.items()]
        self.outputs = [IOSpec(n, np.dtype(d["dtype"]).name, [int(x) for x in d["shape"]]) for n, d in outs.items()]

    def run(self, feeds: dict) -> dict:
        """feeds {input name: array} (cast to the input dtypes, static shapes) -> {output name: numpy array}."""
        feeds = self._check_feeds(feeds)
        if self.runner is not None:
            return {k: np.asarray(v) for k, v in self.runner(**feeds).items()}
        for name, idx in self._in_index.items():
            self.interp.set_tensor(idx, feeds[name])
        self.interp.invoke()
        return {name: self.interp.get_tensor(idx) for name, idx in self._out_index.items()}


def _clean(name: str) -> str:
    """TFLite names signature I/O like `serving_default_input_ids:0`; keep the plain name."""
    name = name.split(":")[0]
    for prefix in ("serving_default_", "StatefulPartitionedCall_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def open_session(path: str | Path, **kw) -> Session:
    """A Session for an artifact file, chosen by its format (not its manifest).

    .onnx -> OrtSession (keywords: providers, threads, custom_op_library); .tflite -> LiteRTSession
    (threads); .engine/.plan -> TensorRTSession (runtime/tensorrt_session.py). Raises EdgeportError for a
    missing file, an unknown format, or a TensorRT engine where tensorrt does not import.
    """
    p = Path(path)
    if not p.is_file():
        raise EdgeportError(f"{p}: no such artifact file")
    with open(p, "rb") as f:
        head = f.read(8)
    if p.suffix == ".tflite" or head[4:8] == b"TFL3":
        return LiteRTSession(p, **kw)
    if p.suffix == ".onnx":
        return OrtSession(p, **kw)
    if p.suffix in (".engine", ".plan"):
        from edgeport.runtime.tensorrt_session import TensorRTSession

        return TensorRTSession(p)  # EdgeportError where tensorrt does not import
    raise EdgeportError(f"{p}: unknown artifact format (expected .onnx or .tflite)")
