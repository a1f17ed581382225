"""`edgeport.json`: the contract between the export stage and the runtime.

Written next to every artifact by the export (and quantize) stage, read by the runtime to tokenize,
feed and post-process: nothing is guessed from file names. Torch-free on purpose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edgeport.errors import EdgeportError

MANIFEST_NAME = "edgeport.json"
FORMAT_VERSION = 1
# protobuf's message limit: an ONNX graph with more weight bytes keeps them in <artifact>.data beside it
TWO_GB = 2 * 1024**3


@dataclass
class TensorSpec:
    """One artifact input or output as the manifest records it."""

    name: str
    dtype: str  # numpy dtype name: "int64", "int32", "float32"
    shape: list  # ints, or strings for symbolic dims ("batch", "sequence")


@dataclass
class ParityCheck:
    """One artifact-vs-reference comparison at one input shape."""

    output: str
    shape: list  # input shape [batch, sequence] it was checked at
    padded_rows: int  # rows of the batch whose attention mask has padding
    max_abs_diff: float
    tolerance: float
    passed: bool


@dataclass
class TokenizerInfo:
    """The tokenizer shipped in the export folder and the ids the runtime pads and masks with."""

    file: str = "tokenizer.json"  # a `tokenizers` JSON file in the artifact folder
    pad_token_id: int = 0
    mask_token: str | None = None
    extra_files: list = field(default_factory=list)
    # "tokenizers": `file` is a tokenizer.json; "luke": the entity-aware LUKE/mLUKE files
    # (edgeport/runtime/luke_tokenizer.py), `file` is entity_vocab.json
    kind: str = "tokenizers"


@dataclass
class Manifest:
    """edgeport.json: what an artifact is, how to feed it, and how it compared with its reference."""

    family: str
    task: str
    target: str  # onnx | tflite | tensorrt
    artifact: str  # file name inside the folder
    precision: str = "fp32"  # compute/weight precision of the artifact
    quantization: dict | None = None  # scheme (weights, activations, granularity, algorithm)
    inputs: list = field(default_factory=list)  # [TensorSpec]
    outputs: list = field(default_factory=list)  # [TensorSpec]
    max_sequence_length: int = 512  # what the positions allow (or the static length)
    static_shapes: bool = False  # TFLite: inputs must be fed at exactly their shape
    # TFLite: the key of the artifact's one signature (LiteRT `get_signature_runner(key)`, Android
    # `Interpreter.runSignature(inputs, outputs, key)`); None for ONNX and for decoders, whose `decoder`
    # block names their prefill and decode signatures
    signature_key: str | None = None
    labels: dict | None = None  # id -> label for classification heads
    # text-classification: "softmax" | "sigmoid" | "none", what the config's problem_type / num_labels make
    # transformers' pipeline apply to the logits (reference_models.config.ModelConfig.score_function)
    score_function: str | None = None
    tokenizer: TokenizerInfo | None = None
    converter: dict = field(default_factory=dict)  # tool -> version, opset
    custom_ops: list = field(default_factory=list)  # [{"domain", "op_type", "runtimes"}]
    source: str = ""  # preset name, folder or hub id the weights came from
    random_weights: bool = False
    sha256: str = ""
    size_bytes: int = 0
    parity: list = field(default_factory=list)  # [ParityCheck]
    parity_passed: bool = False
    edgeport_version: str = ""
    notes: list = field(default_factory=list)  # what users must know about this export (e.g. ConvBERT padding)
    decoder: dict | None = None  # decoders: KV-cache layout, signatures, special tokens (export/decoders.py)
    # `--target auto` / `--quantize auto` (export/auto.py): the budget, what was timed, and every candidate
    # measured (target, lowering, precision, latency median/p90 ms, accuracy metrics, pass/fail); None otherwise
    auto: dict | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The manifest as indented JSON text (dataclasses as dicts)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        """A Manifest from parsed edgeport.json; nested specs, tokenizer and parity become dataclasses."""
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["inputs"] = [TensorSpec(**t) for t in d.get("inputs", [])]
        d["outputs"] = [TensorSpec(**t) for t in d.get("outputs", [])]
        d["parity"] = [ParityCheck(**p) for p in d.get("parity", [])]
        if d.get("tokenizer"):
            d["tokenizer"] = TokenizerInfo(**d["tokenizer"])
        return cls(**d)


def read_manifest(path: str | os.PathLike) -> tuple[Manifest, Path]:
    """Manifest for an artifact file or its folder; returns (manifest, folder).

    EdgeportError (one line) for a missing path, a folder without edgeport.json, a file with none beside it,
    a manifest that does not parse, and a file other than the artifact the manifest names."""
    p = Path(path)
    if not p.exists():
        raise EdgeportError(f"{p}: no such file or folder")
    folder = p if p.is_dir() else p.parent
    mf = folder / MANIFEST_NAME
    if not mf.is_file() and p.is_file():
        raise EdgeportError(f"{p}: a file outside any export folder (no {MANIFEST_NAME} beside it); give an "
                            f"export folder (the folder holding {MANIFEST_NAME}) or its artifact")
    if not mf.is_file():
        raise EdgeportError(f"{folder}: no {MANIFEST_NAME} here; is this an edgeport export folder?")
    try:
        manifest = Manifest.from_dict(json.loads(mf.read_text()))
    except (ValueError, TypeError) as e:
        raise EdgeportError(f"{mf}: not a valid edgeport manifest ({e})") from None
    if p.is_file() and p.name != MANIFEST_NAME and p.name != manifest.artifact:
        raise EdgeportError(f"{p}: not the artifact its manifest names ({manifest.artifact})")
    return manifest, folder


def export_folder(path: str | os.PathLike, command: str) -> Path:
    """`path` as an export folder, for a command that takes folders only (`edgeport serve`); `command` names it
    in the messages. EdgeportError (one line) for a missing path, and for a file: then naming its folder
    when that holds edgeport.json (the model.onnx of an export). Whether a folder holds a valid manifest is
    read_manifest's to say."""
    p = Path(path)
    if p.is_dir():
        return p
    if not p.exists():
        raise EdgeportError(f"{command}: {p}: no such export folder")
    beside = (f"; give its folder, {p.parent}, which holds {MANIFEST_NAME}" if (p.parent / MANIFEST_NAME).is_file()
              else "")
    raise EdgeportError(f"{command}: {p} is a file; {command} takes an export folder (the folder holding "
                        f"{MANIFEST_NAME}){beside}")


def float_artifact_path(manifest: Manifest, folder: str | os.PathLike) -> Path | None:
    """The float artifact a quantized export (`manifest`, read from `folder`) was made from, or None.

    `quantization.float_artifact` is a path relative to the quantized folder (a sibling export:
    "../bert/model.onnx"); manifests written before that held the path as the quantizer was given it
    (absolute, or relative to the directory it ran in), which is tried next. A candidate counts only
    when its sha256 (with its `.data` file, as the export hashed it) equals `quantization.float_sha256`,
    so a different file at the same path is never returned. None for float exports and when no
    candidate is found (the float folder moved apart or was removed).
    """
    q = manifest.quantization or {}
    recorded = q.get("float_artifact")
    if not recorded:
        return None
    for candidate in dict.fromkeys((Path(folder) / recorded, Path(recorded))):  # folder-relative, then as written
        if not candidate.is_file():
            continue
        data = candidate.with_name(candidate.name + ".data")
        if not q.get("float_sha256") or sha256_of([candidate] + ([data] if data.is_file() else [])) == q["float_sha256"]:
            return candidate
    return None


def float_artifact_status(manifest: Manifest, folder: str | os.PathLike) -> tuple[Path | None, str]:
    """(path, words) for `edgeport inspect`: where a quantized export's float artifact is, or why none is named.

    path: float_artifact_path's answer. words, when path is None: "made straight from the checkpoint; no
    float artifact" (streaming int4, quantization.from_checkpoint); "made from the checkpoint by --quantize
    auto; ..." (float_kept False: its fp32 candidate was not kept); "<path> (changed since it was quantized)"
    when the recorded file exists with another sha256; "<path> (not found here: moved apart or removed)".
    """
    q = manifest.quantization or {}
    found = float_artifact_path(manifest, folder)
    if found:
        return found, str(found)
    recorded = q.get("float_artifact")
    if not recorded:
        if q.get("from_checkpoint"):
            return None, "made straight from the checkpoint; no float artifact"
        if q.get("float_kept") is False:
            return None, ("made from the checkpoint by --quantize auto; its float export was a temporary "
                          "candidate, not kept")
        return None, "no float artifact recorded"
    if any(p.is_file() for p in (Path(folder) / recorded, Path(recorded))):
        return None, f"{recorded} (changed since it was quantized: its sha256 differs)"
    return None, f"{recorded} (not found here: moved apart or removed)"


def sha256_of(paths, stop=None) -> str | None:
    """sha256 (hex) over one file, or over several in order (model.onnx + model.onnx.data), read in
    4 MiB blocks into one buffer. `stop`: a threading.Event checked between blocks; once set, returns
    None unfinished (Sha256InBackground.cancel). Raises OSError for a file that cannot be read."""
    h, buf = hashlib.sha256(), bytearray(4 << 20)
    view = memoryview(buf)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                if stop is not None and stop.is_set():
                    return None
                h.update(view[:n])
    return h.hexdigest()


class Sha256InBackground:
    """sha256_of(paths) on a background thread, for files that no longer change, while the caller does
    other work (hashlib releases the GIL while hashing a large block, so this takes the core the
    caller leaves idle: a streamed export's graph optimisation and reference passes are mostly single-
    threaded Python or memory-bound). `result()` -> the hex digest (re-raises the thread's error);
    `cancel()` stops it at the next block (the export failed: nothing will be recorded)."""

    def __init__(self, paths):
        import threading

        self._paths, self._stop, self._out = [Path(p) for p in paths], threading.Event(), {}
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self._out["hex"] = sha256_of(self._paths, self._stop)
        except BaseException as e:  # handed to result(): the caller decides
            self._out["error"] = e

    def result(self) -> str:
        """The digest sha256_of(paths) gives; waits for the thread; re-raises its error."""
        self._thread.join()
        if "error" in self._out:
            raise self._out["error"]
        if self._out.get("hex") is None:
            raise RuntimeError("sha256 was cancelled")
        return self._out["hex"]

    def cancel(self):
        """Stop at the next block (no-op once finished)."""
        self._stop.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike):
    """Yield a temp folder beside `out_dir`; on success it replaces `out_dir` in one rename.

    On any failure the temp folder is removed and `out_dir` is left as it was, so the output
    folder never holds a half-written artifact. An existing `out_dir` is replaced only if it is
    an earlier edgeport output (holds edgeport.json) or empty.
    """
    out = Path(out_dir).resolve()
    if out.exists():
        if not out.is_dir():
            raise EdgeportError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).exists():
            raise EdgeportError(f"{out}: folder exists and is not an edgeport output; choose another -o")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output folder should not be
    except OSError as e:
        raise EdgeportError(f"{out}: cannot write the output folder ({e.strerror})") from None
    try:
        yield tmp
        old = None
        if out.exists():
            old = parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
