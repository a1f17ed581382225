"""edgeport: export transformer models to ONNX, TFLite and TensorRT, validated, and run them.

Importing the package is cheap: stages are imported on use. The runtime (``edgeport.runtime``)
imports neither torch nor TensorFlow.
"""

__version__ = "0.1.0"

from edgeport.errors import EdgeportError  # noqa: E402

__all__ = ["EdgeportError", "__version__"]
