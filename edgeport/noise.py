"""Keep third-party log noise away from the user: the progress lines are the user's view.

Exporting to TFLite or quantizing loads TensorFlow, LiteRT, litert-torch, torchao and onnxruntime, which
write to stderr on every run: TensorFlow's oneDNN and CUDA/GPU lines, absl's "All log messages before
absl::InitializeLog()", LiteRT's "Created TensorFlow Lite XNNPACK delegate", torchao's "Failed to load
... .so" (optional CUDA kernels: harmless on CPU, reads as a broken install), torch's pytree deprecation
lines, FutureWarnings, onnxruntime's colour-coded warnings, numpy RuntimeWarnings from the int4 quantizer.

`third_party_quiet()` silences what can be silenced at the source (environment variables read at import,
Python loggers, warnings filters, onnxruntime's log level) and, as a net for C++ code that writes to file
descriptor 2 directly, captures fd 2 and replays every line that is not in NOISE. Python's sys.stderr
stays on the terminal meanwhile (progress lines show live; tracebacks and errors are never held back).
Lines it does not know pass through, so a real problem still shows.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager

# Lines known to be third-party noise (matched after stripping ANSI colour codes).
NOISE = [re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^[IWE]\d{4} [\d:. ]+\d+ \S+\] ",  # glog/absl-style lines from TF, XLA, torch's C++ loggers
    r"oneDNN custom operations are on",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate",
    r"^Failed to load .*torchao",
    r"Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* in other operations, rebuild TensorFlow",
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[[WI]:onnxruntime:",  # onnxruntime warnings/info
)]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Python loggers of third-party packages that log at WARNING about optional parts
_LOGGERS = ("torchao", "torch.utils._pytree", "torch._export", "torch.export", "litert_torch", "ai_edge_torch",
            "absl", "tensorflow", "jax._src.xla_bridge")


def is_noise(line: str) -> bool:
    """True when a stderr line (ANSI colour codes allowed) is known third-party noise."""
    plain = _ANSI.sub("", line).strip()
    return not plain or any(p.search(plain) for p in NOISE)


def silence_at_source() -> None:
    """Environment, loggers, warnings and onnxruntime settings that stop noise before it is written.
    Environment variables only take effect before TensorFlow is first imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "2")
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning, RuntimeWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(?!edgeport)")
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # errors only
    except ImportError:
        pass


def _on_fd2(stream) -> bool:
    """True when `stream` writes to file descriptor 2."""
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def third_party_quiet(enabled: bool = True):
    """Silence third-party noise for the duration (see module docstring); lines on fd 2 that are not
    NOISE are written back to stderr when the block ends (or raises), in order."""
    if not enabled:
        yield
        return
    silence_at_source()
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        # Python-level writes (progress, our notes) go straight to the real stderr (unless sys.stderr is
        # not fd 2 anyway, e.g. captured by a test harness: then it is left alone)
        if _on_fd2(python_stderr):
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
        try:
            yield
        finally:
            sys.stderr.flush()
            if sys.stderr is not python_stderr:
                sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [ln for ln in capture.read().decode("utf-8", "replace").splitlines() if not is_noise(ln)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
