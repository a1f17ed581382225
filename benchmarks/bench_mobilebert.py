"""MobileBERT (real google/mobilebert-uncased architecture, random weights) QA at batch 1:
PyTorch eager (transformers and edgeport's reference), edgeport's ONNX in onnxruntime and edgeport's
TFLite in LiteRT, at lengths 128 and 384, as ratios to transformers eager, measured in one run.

    python benchmarks/bench_mobilebert.py [--lengths 128 384] [--rounds 6] [--calls 20]

Peers on this kind of machine (shared/PEERS.md): Optimum's ONNX in onnxruntime 0.45x eager at 384,
litert-torch's TFLite 0.35x.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measure, report  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def feeds(seq: int, dtype: str):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(1, seq)).astype(dtype)
    types = np.zeros((1, seq), dtype)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": np.ones((1, seq), dtype), "token_type_ids": types}


def make_transformers(seq):
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.MobileBertForQuestionAnswering(transformers.MobileBertConfig()).eval()
    f = {k: torch.from_numpy(v) for k, v in feeds(seq, "int64").items()}

    def call():
        with torch.inference_mode():
            model(**f)

    return call


def make_reference(seq):
    import warnings

    import torch

    from edgeport.reference_models import load_reference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_reference("mobilebert", "question-answering").model
    f = [torch.from_numpy(v) for v in feeds(seq, "int64").values()]

    def call():
        with torch.inference_mode():
            model(*f)

    return call


def make_session(path, seq, dtype):
    from edgeport.runtime import load

    sess = load(path)
    f = feeds(seq, dtype)
    return lambda: sess.run(f)


def export_all(lengths, work: Path) -> dict:
    from edgeport.export import export

    paths = {}
    jobs = [("onnx", "onnx", 128)] + [(seq, "tflite", seq) for seq in lengths]
    for key, target, seq in jobs:
        out = work / (target if target == "onnx" else f"tflite{seq}")
        if (out / "edgeport.json").is_file():  # --work reuses earlier exports
            paths[key] = out
            continue
        t0 = time.perf_counter()
        paths[key] = export("mobilebert", target, "question-answering", out_dir=out, seq_len=seq, quiet=True)
        print(f"exported {target} @{seq} in {time.perf_counter() - t0:.0f}s", flush=True)
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 384])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--work", help="folder for the exports, reused when it holds them (default: a temp dir)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-mobilebert-"))
    paths = export_all(a.lengths, work)
    for seq in a.lengths:
        contenders = {
            "transformers eager (torch)": functools.partial(make_transformers, seq),
            "edgeport reference eager (torch)": functools.partial(make_reference, seq),
            "edgeport ONNX, onnxruntime": functools.partial(make_session, str(paths["onnx"]), seq, "int64"),
            "edgeport TFLite, LiteRT (XNNPACK)": functools.partial(make_session, str(paths[seq]), seq, "int32"),
        }
        times = measure(contenders, rounds=a.rounds, calls=a.calls)
        report(f"MobileBERT QA, batch 1, length {seq}", times, baseline="transformers eager (torch)")
    sizes = {k: sum(f.stat().st_size for f in Path(p).glob("model.*")) / 1e6 for k, p in paths.items()}
    print("\nartifact sizes (MB): " + ", ".join(f"{k}: {v:.1f}" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
