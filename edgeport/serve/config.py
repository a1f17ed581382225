"""Serving settings and the `NAME=FOLDER` model specs of `edgeport serve`.

Torch-free: imports only the standard library and edgeport.errors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from edgeport.errors import EdgeportError


MAX_WAIT_MS = 60_000.0  # ServeConfig.check refuses a longer micro-batching wait


@dataclass
class ServeConfig:
    """Limits and batching knobs shared by every model a server holds.

    Units: milliseconds for `max_wait_ms`, seconds for `timeout_s`, bytes for `max_body_bytes`,
    characters (not tokens) for `max_text_chars`; `max_batch` and `max_queue` count rows (texts,
    prompts or tensor rows), `max_items` counts the rows of one request.
    """

    max_batch: int = 32  # rows one model run takes at most (dynamic micro-batching)
    max_wait_ms: float = 5.0  # how long the first queued row waits for others before its batch runs
    max_queue: int = 1024  # queued rows per model before requests get 503 + Retry-After
    workers: int = 1  # threads running batches per model (onnxruntime: one shared session; LiteRT: one each)
    threads: int | None = None  # intra-op threads per session (default: all cores)
    spin: bool = True  # onnxruntime's intra-op threads spin-wait between runs (its default); False yields the cores
    timeout_s: float = 30.0  # per request, queueing included; past it the answer is 504
    max_body_bytes: int = 1 << 20  # request bodies over this get 413
    max_text_chars: int = 20_000  # one text (or prompt) over this gets 413
    max_items: int = 256  # texts per request over this get 413
    max_new_tokens: int = 512  # generation cap per request
    truncate: bool = False  # truncate texts longer than a model accepts (else 400)
    retry_after_s: int = 1  # Retry-After header sent with 503

    def check(self):
        """Raises EdgeportError on values that cannot serve (zero or negative sizes, waits or limits; a wait
        or timeout that is nan or infinite; a max_wait_ms over MAX_WAIT_MS, which no micro-batching means)."""
        for name in ("max_batch", "max_queue", "workers", "max_body_bytes", "max_text_chars", "max_items",
                     "max_new_tokens"):
            value = getattr(self, name)
            if value < 1:
                raise EdgeportError(f"serve: {name.replace('_', '-')} must be at least 1 (got {value})")
        if not (math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0):  # nan would break the batching loop
            raise EdgeportError(f"serve: max-wait-ms must be a finite number >= 0 (got {self.max_wait_ms})")
        if self.max_wait_ms > MAX_WAIT_MS:
            raise EdgeportError(f"serve: max-wait-ms is how long a request waits for others to batch with: at most "
                                f"{MAX_WAIT_MS:g} (a minute), got {self.max_wait_ms:g}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise EdgeportError(f"serve: timeout must be a finite number of seconds > 0 (got {self.timeout_s})")
        if self.threads is not None and self.threads < 1:
            raise EdgeportError("serve: threads must be at least 1")
        return self


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_model_specs(specs: list, command: str = "serve") -> dict:
    """`["FOLDER", "NAME=FOLDER", ...]` -> {name: Path}; the name defaults to the folder's name.

    Raises EdgeportError for a missing folder, a file (manifest.export_folder), a name outside
    [A-Za-z0-9._-] (it becomes a URL path segment and the `model` field of every protocol) or a name given
    twice; messages start with `command` (the CLI command that was run: serve, triton-repo).
    """
    out = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep:
            name, folder = Path(spec).resolve().name, spec
        if not _NAME.match(name):
            raise EdgeportError(f"{command}: model name '{name}' must match [A-Za-z0-9][A-Za-z0-9._-]* "
                                "(NAME=FOLDER to choose)")
        if name in out:
            raise EdgeportError(f"{command}: two models are named '{name}'; use NAME=FOLDER to tell them apart")
        from edgeport.manifest import export_folder  # torch-free, like this module

        out[name] = export_folder(folder, command)  # a file (the model.onnx of an export) names its folder
    if not out:
        raise EdgeportError(f"{command}: give at least one export folder")
    return out
