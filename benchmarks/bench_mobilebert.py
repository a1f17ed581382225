"""MobileBERT (real google/mobilebert-uncased architecture, random weights) QA at batch 1, lengths
128 and 384, all as ratios to transformers eager, measured in one run, each contender in its own
process: PyTorch eager (transformers, edgeport's reference), edgeport's ONNX in onnxruntime,
edgeport's TFLite in LiteRT, and the peers on the same weights: Optimum's ONNX export (made in a
separate venv, see common.ensure_optimum_venv; skipped with --no-optimum) run in the same
onnxruntime, and litert-torch's conversion of transformers' model run in the same LiteRT.

    python benchmarks/bench_mobilebert.py [--lengths 128 384] [--rounds 6] [--calls 15] [--work DIR]

shared/PEERS.md quotes Optimum 0.45x and litert-torch 0.35x eager at 384 on an AVX-512 machine; the
ratios depend on the CPU, which is why the peers run here too.
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
from common import make_raw_ort, measure, optimum_export, report, torch_call  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def feeds(seq: int, dtype: str):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(1, seq)).astype(dtype)
    types = np.zeros((1, seq), dtype)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": np.ones((1, seq), dtype), "token_type_ids": types}


def hf_model():
    """transformers' MobileBERT QA with edgeport's preset weights (seed 0): every contender, same weights."""
    import warnings

    import transformers

    from edgeport.reference_models import load_reference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference("mobilebert", "question-answering")
    model = transformers.MobileBertForQuestionAnswering(transformers.MobileBertConfig()).eval()
    missing, _ = model.load_state_dict(ref.model.state_dict(), strict=False)
    assert not [k for k in missing if "decoder" not in k], missing
    return model


def make_transformers(seq):
    return torch_call(hf_model(), feeds(seq, "int64"))


def make_reference(seq):
    import warnings

    from edgeport.reference_models import load_reference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_reference("mobilebert", "question-answering").model
    return torch_call(model, list(feeds(seq, "int64").values()))


def make_session(path, seq, dtype):
    from edgeport.runtime import load

    sess = load(path)
    f = feeds(seq, dtype)
    return lambda: sess.run(f)


def export_peers(lengths, work: Path, optimum_venv: Path | None) -> dict:
    """Optimum's ONNX export and litert-torch's TFLite of transformers' model, same weights."""
    import torch

    paths = {}
    ckpt = work / "hf-ckpt"
    if not (ckpt / "config.json").exists():
        hf_model().save_pretrained(str(ckpt))
    found = optimum_export(optimum_venv, ckpt, "question-answering", work / "optimum") if optimum_venv else None
    if found:
        paths["optimum"] = found
    import litert_torch

    for seq in lengths:
        path = work / f"litert-torch-{seq}.tflite"
        if not path.exists():
            model = hf_model()

            class Named(torch.nn.Module):  # int32 keyword inputs, as litert-torch models are fed
                def __init__(self):
                    super().__init__()
                    self.m = model

                def forward(self, input_ids, attention_mask, token_type_ids):
                    o = self.m(input_ids=input_ids.long(), attention_mask=attention_mask.long(),
                               token_type_ids=token_type_ids.long())
                    return {"start_logits": o.start_logits, "end_logits": o.end_logits}

            sample = {k: torch.from_numpy(v) for k, v in feeds(seq, "int32").items()}
            litert_torch.convert(Named().eval(), (), sample_kwargs=sample).export(str(path))
        paths[f"litert-torch-{seq}"] = path
    return paths


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
    ap.add_argument("--optimum-venv", type=Path, default=Path("/tmp/optimum-venv"))
    ap.add_argument("--no-optimum", action="store_true")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-mobilebert-"))
    paths = export_all(a.lengths, work)
    paths.update(export_peers(a.lengths, work, None if a.no_optimum else a.optimum_venv))
    for seq in a.lengths:
        contenders = {
            "transformers eager (torch)": functools.partial(make_transformers, seq),
            "edgeport reference eager (torch)": functools.partial(make_reference, seq),
            "edgeport ONNX, onnxruntime": functools.partial(make_session, str(paths["onnx"]), seq, "int64"),
            "edgeport TFLite, LiteRT (XNNPACK)": functools.partial(make_session, str(paths[seq]), seq, "int32"),
            "peer: litert-torch TFLite, LiteRT": functools.partial(make_session, str(paths[f"litert-torch-{seq}"]),
                                                                   seq, "int32"),
        }
        if "optimum" in paths:
            contenders["peer: Optimum ONNX, onnxruntime"] = functools.partial(make_raw_ort, paths["optimum"], feeds(seq, "int64"))
        times = measure(contenders, rounds=a.rounds, calls=a.calls)
        report(f"MobileBERT QA, batch 1, length {seq}", times, baseline="transformers eager (torch)")
    sizes = {k: sum(f.stat().st_size for f in (Path(p).glob("model.*") if Path(p).is_dir() else [Path(p)])) / 1e6
             for k, p in paths.items()}
    print("\nartifact sizes (MB): " + ", ".join(f"{k}: {v:.1f}" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
