"""BERT, MegatronBERT, ConvBERT and MEGA at their base-size architectures (random weights), text
classification, batch 1, length 128: PyTorch eager, edgeport's ONNX in onnxruntime (CPU) and edgeport's
TFLite in LiteRT (XNNPACK), as ratios to eager, interleaved in one run, medians, 2 threads.

    python benchmarks/bench_encoders.py [--families bert convbert mega megatron-bert] [--rounds 6] [--calls 20]

Eager is transformers' model where transformers 5 has the family (MEGA: edgeport's reference, the only
PyTorch MEGA left); edgeport's reference eager is listed beside it. For BERT and MegatronBERT both ONNX
lowerings run: `default` (onnxruntime's fused Attention/SkipLayerNormalization/BiasGelu, see
edgeport/ops/bert_attention.py) and `generic` (plain opset-17 graph).
Peer (shared/PEERS.md): Optimum's BERT-base export in onnxruntime runs at 0.44x transformers eager.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_raw_ort, measure, optimum_export, report, torch_call  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SEQ = 128
TASK = "text-classification"
HF_CLASS = {"bert": "BertForSequenceClassification", "megatron-bert": "MegatronBertForSequenceClassification",
            "convbert": "ConvBertForSequenceClassification"}


def feeds(dtype: str, inputs) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    f = {"input_ids": rng.integers(1000, 20000, size=(1, SEQ)).astype(dtype),
         "attention_mask": np.ones((1, SEQ), dtype), "token_type_ids": np.zeros((1, SEQ), dtype)}
    return {k: v for k, v in f.items() if k in inputs}


def make_transformers(family):
    import torch
    import transformers

    from edgeport.reference_models.registry import get_family

    hf_cfg = dict(get_family(family).presets[family])
    hf_cfg.pop("model_type")
    torch.manual_seed(0)
    cls = getattr(transformers, HF_CLASS[family])
    model = cls(transformers.AutoConfig.for_model(family, **hf_cfg)).eval()
    return torch_call(model, feeds("int64", ("input_ids", "attention_mask", "token_type_ids")))


def make_reference(family):
    from edgeport.export.contracts import contract_for
    from edgeport.reference_models import load_reference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(family, TASK)
    return torch_call(ref.model, list(feeds("int64", contract_for(ref).inputs).values()))


def make_session(path, dtype):
    from edgeport.runtime import load

    sess = load(path)
    f = feeds(dtype, [s.name for s in sess.inputs])
    return lambda: sess.run(f)


def export_family(family, work: Path) -> dict:
    """label -> export folder."""
    from edgeport.export import export
    from edgeport.export.lowerings import lowerings_for

    paths = {}
    for low in ("default", "generic") if "generic" in lowerings_for(family, "onnx") else (None,):
        t0 = time.perf_counter()
        paths[f"onnx-{low or 'generic'}"] = export(family, "onnx", TASK, out_dir=work / f"{family}-onnx-{low}",
                                                   lowering=low, quiet=True)
        print(f"{family}: exported ONNX ({low or 'generic'}) in {time.perf_counter() - t0:.0f}s", flush=True)
    t0 = time.perf_counter()
    paths["tflite"] = export(family, "tflite", TASK, out_dir=work / f"{family}-tflite", seq_len=SEQ, quiet=True)
    print(f"{family}: exported TFLite @{SEQ} in {time.perf_counter() - t0:.0f}s", flush=True)
    return paths


def export_optimum(family, work: Path, venv: Path):
    """Optimum's ONNX export of transformers' model carrying the same (preset, seed 0) weights."""
    import transformers

    from edgeport.reference_models import load_reference
    from edgeport.reference_models.registry import get_family

    ckpt = work / f"{family}-hf"
    if not (ckpt / "config.json").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = load_reference(family, TASK)
        hf_cfg = dict(get_family(family).presets[family])
        hf_cfg.pop("model_type")
        model = getattr(transformers, HF_CLASS[family])(transformers.AutoConfig.for_model(family, **hf_cfg))
        missing, _ = model.load_state_dict(ref.model.state_dict(), strict=False)
        assert not missing, missing
        model.save_pretrained(str(ckpt))
    return optimum_export(venv, ckpt, TASK, work / f"{family}-optimum")


def contenders(family, paths) -> tuple[dict, str]:
    c = {}
    if family in HF_CLASS:
        c["transformers eager (torch)"] = functools.partial(make_transformers, family)
    c["edgeport reference eager (torch)"] = functools.partial(make_reference, family)
    for label, folder in paths.items():
        if label.startswith("onnx"):
            c[f"edgeport ONNX ({label[5:]}), onnxruntime"] = functools.partial(make_session, str(folder), "int64")
    c["edgeport TFLite, LiteRT (XNNPACK)"] = functools.partial(make_session, str(paths["tflite"]), "int32")
    if "optimum" in paths:
        c["peer: Optimum ONNX, onnxruntime"] = functools.partial(
            make_raw_ort, paths["optimum"], feeds("int64", ("input_ids", "attention_mask", "token_type_ids")))
    return c, next(iter(c))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", nargs="+", default=["bert", "convbert", "mega", "megatron-bert"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--work", help="folder for the exports (default: a temp dir)")
    ap.add_argument("--optimum-venv", type=Path, default=Path("/tmp/optimum-venv"))
    ap.add_argument("--no-optimum", action="store_true")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-encoders-"))
    for family in a.families:
        paths = export_family(family, work)
        if family in HF_CLASS and not a.no_optimum:
            found = export_optimum(family, work, a.optimum_venv)
            if found:
                paths["optimum"] = found
        cands, baseline = contenders(family, paths)
        times = measure(cands, rounds=a.rounds, calls=a.calls)
        report(f"{family} (preset '{family}') {TASK}, batch 1, length {SEQ}", times, baseline=baseline)
        sizes = {k: sum(f.stat().st_size for f in (Path(p).glob("model.*") if Path(p).is_dir() else [Path(p)]))
                 / 2**20 for k, p in paths.items()}
        print("  artifact sizes (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()), flush=True)


if __name__ == "__main__":
    main()
