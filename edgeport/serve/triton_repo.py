"""`edgeport triton-repo`: a Triton Inference Server model repository from ONNX export folders.

Per export folder NAME (layout and fields as Triton's model_config.proto and its docs define them:
https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_configuration.md):

    NAME/config.pbtxt, NAME/1/model.onnx           platform onnxruntime_onnx, max_batch_size, dims
                                                   without the batch axis (-1 = variable),
                                                   dynamic_batching, instance_group (CPU)
    NAME_tokenizer/config.pbtxt, 1/model.py, ...   Python backend: TEXT (TYPE_STRING) -> token tensors
    NAME_text/config.pbtxt, 1/                     ensemble: TEXT -> NAME_tokenizer -> NAME -> outputs

Written to a temporary folder and renamed at the end: a failure leaves no half-written repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import atomic_output_dir, read_manifest

TRITON_TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32",
                "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64"}
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MODEL_FILE = Path(__file__).with_name("triton_tokenizer_model.py")


def _dims(shape: list) -> str:
    """Manifest shape without its batch axis -> `[ -1, 2 ]` (symbolic dims become -1)."""
    return "[ " + ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in shape[1:]) + " ]"


def _tensors(kind: str, specs: list) -> str:
    rows = [f'  {{ name: "{s.name}" data_type: {TRITON_TYPES[s.dtype]} dims: {_dims(s.shape)} }}' for s in specs]
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def _batching(max_batch: int, delay_us: int, preferred: list) -> str:
    sizes = ", ".join(str(b) for b in preferred)
    return (f"dynamic_batching {{\n  preferred_batch_size: [ {sizes} ]\n"
            f"  max_queue_delay_microseconds: {delay_us}\n}}\n")


def _instances(count: int) -> str:
    return f"instance_group [\n  {{ count: {count} kind: KIND_CPU }}\n]\n"


def onnx_config(name, manifest, max_batch, delay_us, preferred, instances) -> str:
    """config.pbtxt of the ONNX model itself."""
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
            + _tensors("input", manifest.inputs) + _tensors("output", manifest.outputs)
            + _batching(max_batch, delay_us, preferred) + _instances(instances))


def tokenizer_config(name, token_inputs, max_batch, delay_us, preferred, instances) -> str:
    """config.pbtxt of the Python-backend tokenizer: TEXT [1] -> the model's token tensors [-1]."""
    outs = ",\n".join(f'  {{ name: "{s.name}" data_type: {TRITON_TYPES[s.dtype]} dims: [ -1 ] }}' for s in token_inputs)
    return (f'name: "{name}_tokenizer"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
            'input [\n  { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }\n]\n'
            f"output [\n{outs}\n]\n" + _batching(max_batch, delay_us, preferred) + _instances(instances))


def ensemble_config(name, manifest, max_batch) -> str:
    """config.pbtxt of the ensemble: TEXT -> tokenizer -> model -> the model's outputs."""
    maps = lambda kind, names: " ".join(f'{kind} {{ key: "{n}" value: "{n}" }}' for n in names)  # noqa: E731
    ins = [s.name for s in manifest.inputs]
    outs = [s.name for s in manifest.outputs]
    return (f'name: "{name}_text"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
            'input [\n  { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }\n]\n'
            + _tensors("output", manifest.outputs)
            + "ensemble_scheduling {\n  step [\n"
            f'    {{ model_name: "{name}_tokenizer" model_version: -1 {maps("input_map", ["TEXT"])} '
            f'{maps("output_map", ins)} }},\n'
            f'    {{ model_name: "{name}" model_version: -1 {maps("input_map", ins)} {maps("output_map", outs)} }}\n'
            "  ]\n}\n")


def _check_servable(folder: Path, manifest) -> None:
    if manifest.target == "tflite" or not manifest.artifact.endswith(".onnx"):
        raise EdgeportError(f"triton-repo: {folder} is a {manifest.target} export; Triton's onnxruntime backend "
                            "needs --target onnx")
    if manifest.decoder:
        raise EdgeportError(f"triton-repo: {folder} is a decoder with a KV cache; serve it with `edgeport serve`")
    if (folder / (manifest.artifact + ".data")).exists():
        raise EdgeportError(f"triton-repo: {folder} keeps its weights in external data; not supported here")
    if any(not isinstance(s.shape[0], str) for s in manifest.inputs + manifest.outputs):
        raise EdgeportError(f"triton-repo: {folder} has a static batch axis; Triton batching needs a dynamic one")
    bad = [s.name for s in manifest.inputs if s.name not in TOKEN_INPUTS or s.dtype not in TRITON_TYPES]
    if bad:
        raise EdgeportError(f"triton-repo: {folder} takes inputs the tokenizer model cannot make: {', '.join(bad)}")


def write_model(repo: Path, name: str, folder: Path, max_batch=32, max_queue_delay_us=5000, instances=1,
                preferred_batch=None) -> list:
    """Writes NAME, NAME_tokenizer and NAME_text under `repo`; returns the three model names."""
    manifest, folder = read_manifest(folder)
    _check_servable(folder, manifest)
    preferred = sorted(set(preferred_batch or [b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max_batch]))
    if not preferred or preferred[-1] > max_batch or preferred[0] < 1:
        raise EdgeportError(f"triton-repo: preferred batch sizes must be between 1 and --max-batch ({max_batch})")
    args = (max_batch, max_queue_delay_us, preferred, instances)
    (repo / name / "1").mkdir(parents=True)
    shutil.copyfile(folder / manifest.artifact, repo / name / "1" / "model.onnx")
    (repo / name / "config.pbtxt").write_text(onnx_config(name, manifest, *args))

    tok = repo / f"{name}_tokenizer"
    (tok / "1").mkdir(parents=True)
    shutil.copyfile(MODEL_FILE, tok / "1" / "model.py")
    shutil.copyfile(folder / manifest.tokenizer.file, tok / "1" / "tokenizer.json")
    settings = {"pad_token_id": manifest.tokenizer.pad_token_id, "max_length": manifest.max_sequence_length,
                "bucket": 16, "outputs": {s.name: s.dtype for s in manifest.inputs}}
    (tok / "1" / "tokenizer_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (tok / "config.pbtxt").write_text(tokenizer_config(name, manifest.inputs, *args))

    ens = repo / f"{name}_text"
    (ens / "1").mkdir(parents=True)  # Triton wants a version folder even for an ensemble
    (ens / "config.pbtxt").write_text(ensemble_config(name, manifest, max_batch))
    return [name, f"{name}_tokenizer", f"{name}_text"]


def write_repository(specs: dict, out_dir, max_batch=32, max_queue_delay_us=5000, instances=1,
                     preferred_batch=None) -> list:
    """{name: ONNX export folder} -> a Triton repository at `out_dir`; returns the model names written.

    Raises EdgeportError for TFLite or decoder folders, static batch axes, inputs other than token
    tensors, sizes below 1; `out_dir` is replaced only when everything was written.
    """
    if max_batch < 1 or instances < 1 or max_queue_delay_us < 0:
        raise EdgeportError("triton-repo: --max-batch and --instances must be >= 1, --max-wait-ms >= 0")
    for folder in specs.values():  # refuse before writing anything
        manifest, folder = read_manifest(folder)
        _check_servable(folder, manifest)
    written = []
    with atomic_output_dir(out_dir) as tmp:
        for name, folder in specs.items():
            written += write_model(Path(tmp), name, Path(folder), max_batch, max_queue_delay_us, instances,
                                   preferred_batch)
    return written
