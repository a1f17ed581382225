"""DeBERTa-v3-base (random weights, real architecture) text-classification: onnxruntime CPU latency of each
DisentangledAttention lowering, as a ratio to PyTorch eager and to Optimum's ONNX export, one process,
interleaved rounds, medians.

    python benchmarks/bench_deberta.py                      # lengths 128 and 512, Optimum if it can be set up
    python benchmarks/bench_deberta.py --no-optimum --lengths 128 --rounds 3

Optimum (optimum-onnx needs transformers < 4.58) is exported in a separate venv (--optimum-venv, created
on first use with torch==2.13.0, transformers==4.57.6, optimum-onnx) by `optimum-cli export onnx`, then
timed here in this venv's onnxruntime like the others. Contenders:
    eager        transformers' DebertaV2ForSequenceClassification, same weights, torch.inference_mode
    <lowering>   `edgeport export deberta-v3-base --target onnx --lowering <name>` (validated on export)
    optimum      optimum-cli export onnx --task text-classification (opset 18 default), same weights
onnxruntime: ORT_ENABLE_ALL, intra_op = --threads, sequential.

Measured on the idle 2-core machine (one process per contender, 4 rounds; classification exports
compute the last layer's output projection and feed-forward for [CLS] only; where the time goes:
edgeport/ops/disentangled_attention_lowerings.py docstring):
    S = 128  eager 314.4 ms | fast (default) 134.1: 0.43x eager, 0.86x optimum | generic 143.4: 0.92x
             | plain 176.2: 1.13x | mha 176.9: 1.14x | optimum 155.5: 0.49x eager
    S = 512  eager 1165.7 ms | fast 851.1: 0.98x optimum | generic 855.2: 0.99x | plain 1471.7: 1.70x
             | mha 1467.7: 1.70x | optimum 865.0: 0.74x eager
    S = 128 again, BENCH_PROCS=2 (two processes per contender), two runs: fast 0.96x / 0.90x optimum,
             generic 0.97x / 0.97x: fast is 0.86-0.96x over three runs (this VM's spread is ~+-5%)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_optimum_venv, measure, torch_call  # noqa: E402

PRESET, TASK = "deberta-v3-base", "text-classification"
LOWERINGS = ("fast", "generic", "plain", "mha")  # fast = the onnx default


def hf_checkpoint(ref, work: Path) -> Path:
    """Our reference's weights as a transformers checkpoint folder (for eager and Optimum)."""
    import torch

    from edgeport.reference_models import get_family

    ckpt = work / "hf-ckpt"
    if not (ckpt / "pytorch_model.bin").exists():
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "config.json").write_text(json.dumps({**get_family("deberta-v2").presets[PRESET],
                                                      "architectures": ["DebertaV2ForSequenceClassification"],
                                                      "num_labels": ref.config.num_labels}))
        torch.save(ref.model.state_dict(), ckpt / "pytorch_model.bin")
    return ckpt


def export_optimum(py: Path, ckpt: Path, work: Path) -> Path | None:
    """optimum-cli export onnx of the checkpoint folder, in the optimum venv."""
    out = work / "optimum"
    if not (out / "model.onnx").exists():
        cli = py.parent / "optimum-cli"
        r = subprocess.run([str(cli), "export", "onnx", "--model", str(ckpt), "--task", TASK, str(out)],
                           capture_output=True, text=True)
        if r.returncode != 0 or not (out / "model.onnx").exists():
            print("optimum export failed:", (r.stderr or r.stdout).strip().splitlines()[-3:], flush=True)
            return None
    return out / "model.onnx"


def make_ort(path: str, seq: int, vocab: int):
    """Factory for common.measure: a plain onnxruntime session (ORT_ENABLE_ALL, sequential)."""
    import onnxruntime as ort

    from common import THREADS

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in feeds_for(vocab, seq).items() if k in names}
    return lambda: sess.run(None, feeds)


def make_eager(seq: int, ckpt: str):
    """Factory for common.measure: transformers' DebertaV2ForSequenceClassification with the same weights
    (the checkpoint folder export_optimum writes), torch.inference_mode."""
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    return torch_call(model, feeds_for(model.config.vocab_size, seq))


def feeds_for(vocab: int, seq: int) -> dict:
    rng = np.random.default_rng(seq)
    return {"input_ids": rng.integers(1, vocab, (1, seq), dtype=np.int64), "attention_mask": np.ones((1, seq), np.int64)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    ap.add_argument("--calls", type=int, default=0, help="timed calls per contender per round (0: by length)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-deberta"))
    ap.add_argument("--optimum-venv", type=Path, default=Path("/tmp/optimum-venv"))
    ap.add_argument("--no-optimum", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="re-export even if --work holds an export")
    args = ap.parse_args()
    os.environ["EDGEPORT_THREADS"] = str(args.threads)
    warnings.simplefilter("ignore")
    import torch

    from edgeport.export import export
    from edgeport.export.validate import sample_inputs
    from edgeport.reference_models import load_reference

    torch.set_num_threads(args.threads)
    ref = load_reference(PRESET, TASK)
    ckpt = hf_checkpoint(ref, args.work)
    paths = {}
    for name in LOWERINGS:
        out = args.work / name
        t = time.time()
        if args.fresh or not (out / "edgeport.json").exists():
            export(PRESET, target="onnx", task=TASK, out_dir=out, lowering=name, quiet=True)
        worst = max(c["max_abs_diff"] for c in json.loads((out / "edgeport.json").read_text())["parity"])
        print(f"{name}: exported in {time.time() - t:.0f} s (0: reused), validated, worst diff {worst:.2e}", flush=True)
        paths[name] = out / "model.onnx"
    if not args.no_optimum:
        py = ensure_optimum_venv(args.optimum_venv)
        path = export_optimum(py, ckpt, args.work) if py else None
        if path is not None:
            import onnxruntime as ort

            from edgeport.export.contracts import contract_for

            paths["optimum"] = path
            f = sample_inputs(contract_for(ref), 1, 64, 0)
            want = ref.model(*[torch.from_numpy(f[n]) for n in ("input_ids", "attention_mask")])[0]
            got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, f)[0]
            print(f"optimum export vs reference: max diff {np.abs(got - want.detach().numpy()).max():.2e}")
    vocab = ref.config.vocab_size
    del ref
    print(f"\nbatch 1, {args.threads} threads, one process per contender, {args.rounds} interleaved rounds; "
          "median ms (ratio to eager" + (", to optimum" if "optimum" in paths else "") + ")")
    for seq in args.lengths:
        makers = {"eager": functools.partial(make_eager, seq, str(ckpt))}
        makers.update({n: functools.partial(make_ort, str(p), seq, vocab) for n, p in paths.items()})
        calls = args.calls or (10 if seq <= 128 else 3)
        med = {n: statistics.median(t) for n, t in measure(makers, args.rounds, calls, args.threads).items()}
        for n, m in med.items():
            extra = f"  {m / med['optimum']:.2f}x optimum" if "optimum" in med else ""
            print(f"S={seq:4d}  {n:8s} {m:8.1f} ms  {m / med['eager']:.2f}x eager{extra}", flush=True)


if __name__ == "__main__":
    main()
