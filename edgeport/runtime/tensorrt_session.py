"""A Session over a serialized TensorRT engine (.engine / .plan): dynamic shapes, device buffers.

Torch-free: TensorRT's Python API runs the engine; device memory and the CUDA stream come from
polygraphy's ctypes wrapper over libcudart (`polygraphy.cuda`, pure Python). Contract followed: the
TensorRT 10 name-based I/O API (`num_io_tensors`, `get_tensor_name/mode/dtype/shape`,
`IExecutionContext.set_input_shape`, `set_tensor_address`, `execute_async_v3(stream)`); engines built by
`edgeport build-engine` have one optimization profile, the one used here.
Device buffers are kept per tensor and grow as shapes do (no reallocation for smaller inputs).
Runs only where `tensorrt` imports (a GPU host); elsewhere opening one raises EdgeportError.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.runtime.session import IOSpec, Session


def _imports():
    try:
        import tensorrt as trt
        from polygraphy import cuda
    except ImportError as e:
        raise EdgeportError(f"running a TensorRT engine needs tensorrt and polygraphy on a GPU host "
                            f"(`import {e.name}` failed): pip install 'edgeport[tensorrt]'") from None
    return trt, cuda


class TensorRTSession(Session):
    """Session over `path` (.engine/.plan). inputs/outputs: IOSpec with None for dynamic dims.

    Raises EdgeportError when tensorrt/polygraphy do not import or the engine does not deserialize
    (built by another TensorRT version or for another GPU); `run` raises it on shapes outside the profile.
    """

    backend = "tensorrt"

    def __init__(self, path: str | Path):
        trt, cuda = _imports()
        self._trt, self._cuda = trt, cuda
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")  # plugin nodes (DisentangledAttention_TRT) need the library
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise EdgeportError(f"{path}: TensorRT cannot deserialize it (built with another TensorRT version "
                                "or for another GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        specs = {n: IOSpec(n, np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))).name,
                           [d if d >= 0 else None for d in self.engine.get_tensor_shape(n)]) for n in names}
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [specs[n] for n in names if is_input[n]]
        self.outputs = [specs[n] for n in names if not is_input[n]]
        self._buffers = {n: cuda.DeviceArray(shape=(1,), dtype=np.dtype(specs[n].dtype)) for n in names}

    def _bind(self, name: str, shape) -> object:
        """Resize the tensor's device buffer to `shape` (at least one element) and give TensorRT its address."""
        buf = self._buffers[name].resize(tuple(shape) if int(np.prod(shape)) > 0 else (1,))
        self.context.set_tensor_address(name, buf.ptr)
        return buf

    def run(self, feeds: dict) -> dict:
        """feeds {input name: array} (cast to the engine's dtypes) -> {output name: numpy array}."""
        feeds = self._check_feeds(feeds)
        for spec in self.inputs:
            a = feeds[spec.name]
            if not self.context.set_input_shape(spec.name, a.shape):
                raise EdgeportError(f"input '{spec.name}' shape {list(a.shape)} is outside the engine's profile")
            buf = self._bind(spec.name, a.shape)
            if a.size:
                buf.copy_from(a, self.stream)
        host = {}
        for spec in self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            buf = self._bind(spec.name, shape)
            host[spec.name] = np.empty(shape, np.dtype(spec.dtype))
        if not self.context.execute_async_v3(self.stream.ptr):
            raise EdgeportError("TensorRT failed to run the engine (see its log)")
        for spec in self.outputs:
            if host[spec.name].size:
                self._buffers[spec.name].copy_to(host[spec.name], self.stream)
        self.stream.synchronize()
        return host
