"""The quantize stage: a float export folder -> a new export folder holding the quantized artifact.

    from edgeport.quantize import quantize_artifact
    out = quantize_artifact("edgeport-out/minilm-onnx", "int8")   # -> edgeport-out/minilm-onnx-int8-dyn-pc

Schemes (edgeport/schemes.py): fp16, int8, int8-static, int4 and their variants, resolved per target against an
explicit supported list. Backends: onnx_backend.py (onnx, tensorrt), tflite_backend.py. What stays in
float: policy.py. Every artifact is compared with its float source on held-out real text (evaluate.py;
decoders: perplexity.py) and the report goes into the manifest's `quantization.accuracy`. A decoder's
manifest `decoder` block (cache layout, special tokens) is carried over, so `edgeport generate` runs it.
The output folder is written atomically: it exists complete, or not at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME, Manifest, atomic_output_dir, read_manifest, sha256_of
from edgeport.progress import Steps

EVAL_TEXTS = 128  # held-out sentences for the accuracy report
CALIBRATION_TEXTS = 64


def _artifact_files(folder: Path, name: str) -> list:
    data = folder / (name + ".data")
    return [folder / name] + ([data] if data.exists() else [])


def _copy_companions(src: Path, dst: Path, manifest: Manifest) -> None:
    """Tokenizer and other files travel with the quantized artifact; the float artifact does not."""
    skip = {MANIFEST_NAME, manifest.artifact, manifest.artifact + ".data"}
    for p in src.iterdir():
        if p.is_file() and p.name not in skip and not p.name.startswith("."):
            shutil.copy2(p, dst / p.name)


def _text_feeds(folder: Path, m: Manifest, texts: list, session) -> list:
    from tokenizers import Tokenizer

    from edgeport.quantize import text

    tok = Tokenizer.from_file(str(folder / m.tokenizer.file))
    tok.no_padding()
    tok.no_truncation()
    ids = next(s for s in session.inputs if s.name == "input_ids")
    length = ids.shape[1] if m.static_shapes else None
    names = [s.name for s in session.inputs]
    return text.encode(tok, texts, names, length, length or min(m.max_sequence_length, 128),
                       m.tokenizer.pad_token_id)


def _random_feeds(session, n: int, vocab: int = 100) -> list:
    """No tokenizer: seeded random ids (reported as such in the manifest)."""
    import numpy as np

    rng = np.random.default_rng(0)
    ids = next(s for s in session.inputs if s.name == "input_ids")
    S = ids.shape[1] if isinstance(ids.shape[1], int) and ids.shape[1] > 0 else 24
    feeds = []
    for _ in range(n):
        f = {"input_ids": rng.integers(5, vocab, (1, S)), "attention_mask": np.ones((1, S), np.int64),
             "token_type_ids": np.zeros((1, S), np.int64)}
        feeds.append({k: v for k, v in f.items() if k in [s.name for s in session.inputs]})
    return feeds


def _feeds(folder, m, session, half: str, n: int, calibration_text=None) -> tuple:
    from edgeport.quantize import text

    if m.tokenizer is None:
        return _random_feeds(session, n), "random token ids (the export has no tokenizer)"
    if calibration_text is not None:
        return _text_feeds(folder, m, text.read_text_file(calibration_text)[:256], session), str(calibration_text)
    return _text_feeds(folder, m, text.sentences(half, n), session), f"pydoc_data.topics ({half} half)"


def _quantize_file(m: Manifest, src: Path, dst: Path, scheme, keep, calib) -> dict:
    if m.target == "tflite":
        from edgeport.quantize.tflite_backend import quantize_tflite

        return quantize_tflite(src, dst, scheme, keep, calib)
    from edgeport.quantize.onnx_backend import quantize_onnx

    return quantize_onnx(src, dst, scheme, m.target, keep, calib, fp16_io=m.task != "text-generation")


def _precision(scheme) -> str:
    return scheme.weights if scheme.activations in ("fp32", "fp16") or scheme.weights == "fp16" else \
        f"{scheme.weights}-{scheme.activations}"


def quantize_artifact(folder_or_artifact, scheme: str, out_dir=None, calibration_text=None, keep_float=None,
                      quiet: bool = False) -> Path:
    """Quantize an export folder (or its artifact file) with `scheme`; returns the new folder.

    Raises EdgeportError for unsupported schemes (naming the supported ones), a quantized source,
    or a bad --keep-float group.
    """
    from edgeport.quantize import policy
    from edgeport.schemes import resolve

    m, folder = read_manifest(folder_or_artifact)
    if m.quantization:
        raise EdgeportError(f"{folder} is already quantized ({m.quantization.get('tag')}); quantize its float export")
    if any(s.name.startswith("entity_") for s in m.inputs):  # calibration and checks feed words only
        raise EdgeportError(f"{folder}: quantizing {m.family} {m.task} (entity inputs) is not supported yet")
    sch = resolve(scheme, m.target, m.task)
    keep = policy.parse_keep_float(keep_float, m.target, sch)
    out = Path(out_dir) if out_dir else folder.parent / f"{folder.name}-{sch.tag}"
    if out.resolve() == folder.resolve():
        raise EdgeportError("the output folder must differ from the float export's folder")
    stem, ext = m.artifact.rsplit(".", 1)
    name = f"{stem}.{sch.tag}.{ext}"
    steps = Steps(3, quiet)
    with atomic_output_dir(out) as tmp:
        report = _build(m, folder, tmp, name, sch, keep, calibration_text, steps)
        with steps.step("writing edgeport.json"):
            (tmp / MANIFEST_NAME).write_text(_manifest(m, folder, tmp, name, sch, keep, report, out).to_json())
    if not quiet:
        print(f"wrote {out}/{name}", flush=True)
    return out


def _build(m, folder, tmp, name, sch, keep, calibration_text, steps) -> dict:
    from edgeport.runtime.session import open_session

    src = folder / m.artifact
    decoder = m.task == "text-generation"
    if decoder and sch.activations == "int8-static":
        raise EdgeportError("int8-static is not supported for text-generation artifacts (calibration through "
                            "the KV cache is not built); use int8 (dynamic) or int4")
    float_sess = None if decoder else open_session(src)  # decoders are scored through runtime.generate
    calib, calib_source = [], None
    if sch.activations == "int8-static":
        calib, calib_source = _feeds(folder, m, float_sess, "calibration", CALIBRATION_TEXTS, calibration_text)
    with steps.step(f"quantizing {m.artifact} ({m.target}) to {sch.tag}" + (f", keeping {', '.join(keep)} in float"
                                                                          if keep else "")):
        converter = _quantize_file(m, src, tmp / name, sch, keep, calib)
        _copy_companions(folder, tmp, m)
        for op, n in (converter.get("fused_ops_left_float") or {}).items():
            steps.note(f"warning: {n} fused {op} node(s) stay fp32 ({sch.tag} cannot reach their weights); "
                       "export with --lowering generic, or quantize with int8, to quantize them")
        size = sum(f.stat().st_size for f in _artifact_files(tmp, name))
        steps.note(f"{name}: {size / 2**20:.1f} MiB ({size / max(m.size_bytes, 1):.1%} of fp32)")
    with steps.step("checking against the float artifact"):  # on what: the headline names it (text or random ids)
        if decoder:
            from edgeport.quantize import perplexity

            accuracy = perplexity.compare(src, tmp / name, m, folder)
        else:
            accuracy = _accuracy(m, folder, float_sess, open_session(tmp / name), tmp)
        steps.note(accuracy.pop("_headline"))
    return {"converter": converter, "calibration": calib_source, "calibration_samples": len(calib),
            "accuracy": accuracy, "size_bytes": size}


def _accuracy(m, folder, float_sess, quant_sess, tmp) -> dict:
    from edgeport.quantize import evaluate

    feeds, source = _feeds(folder, m, float_sess, "evaluation", EVAL_TEXTS)
    queries = None
    if m.task == "feature-extraction" and m.tokenizer is not None:
        from edgeport.quantize import text

        halves = [" ".join(s.split()[: max(3, len(s.split()) // 2)]) for s in text.sentences("evaluation", EVAL_TEXTS)]
        queries = _text_feeds(folder, m, halves, float_sess)
    report = evaluate.compare(float_sess, quant_sess, m.task, feeds, queries)
    report["text"] = source
    report["_headline"] = evaluate.headline(report)
    return report


def _manifest(m: Manifest, folder, tmp, name, sch, keep, report, out) -> Manifest:
    import dataclasses

    import edgeport

    files = _artifact_files(tmp, name)
    # float_artifact: relative to the quantized folder (e.g. "../bert/model.onnx"), so moving both folders
    # together keeps it; float_sha256 identifies the file wherever it went (manifest.float_artifact_path)
    rel = os.path.relpath(Path(folder).resolve() / m.artifact, Path(out).resolve()).replace(os.sep, "/")
    quant = {"tag": sch.tag, **sch.axes(), "keep_float": keep, "float_artifact": rel,
             "float_sha256": m.sha256, "float_size_bytes": m.size_bytes,
             "size_ratio": report["size_bytes"] / max(m.size_bytes, 1), "calibration": report["calibration"],
             "calibration_samples": report["calibration_samples"], "accuracy": report["accuracy"]}
    return dataclasses.replace(
        m, artifact=name, precision=_precision(sch), quantization=quant, sha256=sha256_of(files),
        size_bytes=report["size_bytes"], converter={**m.converter, "quantizer": report["converter"]},
        edgeport_version=edgeport.__version__)
