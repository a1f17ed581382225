"""Decoder benchmarks: onnxruntime vs PyTorch eager, and com.microsoft.MoE vs the generic decomposition.

    python benchmarks/bench_decoders.py                 # both parts, 2 threads
    python benchmarks/bench_decoders.py --part moe --threads 2 --rounds 30

Part "decode": a Mistral-architecture model of ~250M parameters (random weights; hidden 1024, 16
layers, GQA 16:4, SwiGLU 2816, vocab 32000, window 4096) exported with the default onnxruntime
lowering (GroupQueryAttention) through `edgeport.export.export_reference` (validated), run
with the runtime's OrtDecoder (IOBinding cache). Contenders, interleaved round by round:
transformers' MistralForCausalLM (eager, DynamicCache, same weights), edgeport's reference (eager),
onnxruntime. Prefill latency at `--prompt` tokens; decode time per token over `--steps` steps.
Part "moe": one Mixtral MoE layer (8 experts, top-2; hidden 1024, expert width 3584), exported
twice (com.microsoft.MoE and the dense decomposition), timed at 1 and 128 tokens.
Goals: decode >= 1.5x transformers eager; MoE op >= 2x the decomposition. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measure  # noqa: E402

MISTRAL_250M = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                    num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096,
                    sliding_window=4096, rms_norm_eps=1e-5)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def build_reference():
    from edgeport.reference_models import Reference
    from edgeport.reference_models.mistral import MistralConfig
    from edgeport.reference_models.registry import get_family

    fam = get_family("mistral")
    cfg = MistralConfig(**MISTRAL_250M)
    torch.manual_seed(0)
    model = fam.build(cfg, "text-generation")
    return Reference(fam, cfg, model, "text-generation", "bench-mistral-250m", None, True, [])


def build_hf(ref):
    import transformers as T

    cfg = T.MistralConfig(**MISTRAL_250M, tie_word_embeddings=False)
    hf = T.MistralForCausalLM(cfg).eval()
    missing, unexpected = hf.load_state_dict(ref.model.state_dict(), strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return hf


def export_ort(ref, out: Path, threads: int):
    from edgeport.export import Options, export_reference
    from edgeport.manifest import read_manifest
    from edgeport.progress import Steps
    from edgeport.runtime.generate import open_decoder

    export_reference(ref, Options("onnx", opset=17), out, Steps(5, quiet=False))
    m, _ = read_manifest(out)
    return open_decoder(out / m.artifact, m.decoder, threads), m.size_bytes


def hf_run(hf, ids, steps):
    """Prefill then `steps` greedy steps; returns (prefill ms, [step ms])."""
    out = {}
    with torch.inference_mode():
        t = timed(lambda: out.update(r=hf(input_ids=ids, use_cache=True)))
        cache, nxt, times = out["r"].past_key_values, out["r"].logits[:, -1].argmax(-1, keepdim=True), []
        for _ in range(steps):
            times.append(timed(lambda: out.update(r=hf(input_ids=nxt, past_key_values=cache, use_cache=True))))
            cache, nxt = out["r"].past_key_values, out["r"].logits[:, -1].argmax(-1, keepdim=True)
    return t, times


def ref_run(model, ids, steps):
    out = {}
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        t = timed(lambda: out.update(r=model(ids, mask)))
        _, pk, pv = out["r"]
        nxt, times = out["r"][0][:, -1].argmax(-1, keepdim=True), []
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
            times.append(timed(lambda: out.update(r=model(nxt, mask, None, pk, pv))))
            _, pk, pv = out["r"]
            nxt = out["r"][0][:, -1].argmax(-1, keepdim=True)
    return t, times


def ort_run(dec, ids, steps):
    ids = ids.numpy()
    dec.reset(1)
    pos = np.arange(ids.shape[1])[None]
    out = {}
    t = timed(lambda: out.update(l=dec.step(ids, np.ones_like(ids), pos)))
    nxt, times = out["l"][:, -1].argmax(-1)[:, None], []
    for i in range(steps):
        p = np.array([[ids.shape[1] + i]])
        times.append(timed(lambda: out.update(l=dec.step(nxt, np.ones_like(nxt), p))))
        nxt = out["l"][:, -1].argmax(-1)[:, None]
    return t, times


def bench_decode(a):
    torch.set_num_threads(a.threads)
    ref = build_reference()
    params = sum(p.numel() for p in ref.model.parameters())
    print(f"Mistral architecture, {params / 1e6:.0f}M parameters, threads {a.threads}, prompt {a.prompt}, "
          f"{a.steps} decode steps, {a.rounds} interleaved rounds")
    hf = build_hf(ref)
    with tempfile.TemporaryDirectory() as tmp:
        dec, size = export_ort(ref, Path(tmp) / "mistral", a.threads)
        print(f"model.onnx {size / 2**20:.0f} MiB")
        ids = torch.randint(3, 32000, (1, a.prompt), generator=torch.Generator().manual_seed(0))
        runs = {"transformers eager": lambda: hf_run(hf, ids, a.steps),
                "edgeport reference eager": lambda: ref_run(ref.model, ids, a.steps),
                "onnxruntime (GQA, IOBinding)": lambda: ort_run(dec, ids, a.steps)}
        for fn in runs.values():  # warm-up
            fn()
        prefill, decode = {k: [] for k in runs}, {k: [] for k in runs}
        for _ in range(a.rounds):
            for name, fn in runs.items():
                time.sleep(0.3)  # the previous contender's idle threads spin a while (see common.py)
                t, steps = fn()
                prefill[name].append(t)
                decode[name].append(statistics.median(steps))
    base = "transformers eager"
    print(f"{'contender':32s} {'prefill ms':>11s} {'decode ms/token':>16s} {'tokens/s':>9s} {'decode x':>9s}")
    for name in runs:
        p, d = statistics.median(prefill[name]), statistics.median(decode[name])
        ratio = statistics.median(decode[base]) / d
        print(f"{name:32s} {p:11.1f} {d:16.2f} {1e3 / d:9.1f} {ratio:9.2f}")
    ratio = statistics.median(decode[base]) / statistics.median(decode["onnxruntime (GQA, IOBinding)"])
    print(f"goal decode >= 1.5x eager: {'met' if ratio >= 1.5 else 'NOT met'} ({ratio:.2f}x)")


class MoELayer(torch.nn.Module):
    def __init__(self, form: str, E=8, H=1024, I=3584, k=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.form, self.k = form, k
        self.router = torch.nn.Parameter(torch.randn(E, H, generator=g) * 0.05)
        self.w1, self.w3 = (torch.nn.Parameter(torch.randn(E, I, H, generator=g) * 0.02) for _ in range(2))
        self.w2 = torch.nn.Parameter(torch.randn(E, H, I, generator=g) * 0.02)

    def forward(self, x):
        from edgeport.ops.moe import moe, moe_dense

        fn = moe if self.form == "op" else moe_dense
        return fn(x, x @ self.router.t(), self.w1, self.w3, self.w2, self.k)


def export_moe(form: str, path: Path) -> Path:
    from edgeport.ops import moe

    moe.register_symbolics(17)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MoELayer(form), (torch.randn(4, 1024),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "T"}, "y": {0: "T"}}, opset_version=17, dynamo=False,
                          custom_opsets={"com.microsoft": 1})
    return path


def moe_session(path: str):
    import onnxruntime as ort

    from common import THREADS

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def make_moe_call(path: str, tokens: int):
    """Factory for common.measure (its own process)."""
    sess = moe_session(path)
    x = np.random.default_rng(0).standard_normal((tokens, 1024)).astype(np.float32)
    return lambda: sess.run(None, {"x": x})


def bench_moe(a):
    print(f"Mixtral MoE layer: 8 experts, top-2, hidden 1024, expert width 3584; threads {a.threads}, "
          "one process per form")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {f: str(export_moe(f, Path(tmp) / f"{f}.onnx")) for f in ("op", "dense")}
        for tokens in (1, 128):
            x = np.random.default_rng(0).standard_normal((tokens, 1024)).astype(np.float32)
            y = {f: moe_session(p).run(None, {"x": x})[0] for f, p in paths.items()}
            diff = float(np.abs(y["op"] - y["dense"]).max())
            makers = {f: functools.partial(make_moe_call, p, tokens) for f, p in paths.items()}
            times = measure(makers, rounds=a.rounds, calls=20 if tokens == 1 else 5, threads=a.threads)
            op, dense = statistics.median(times["op"]), statistics.median(times["dense"])
            print(f"  {tokens:4d} tokens: com.microsoft.MoE {op:8.2f} ms, decomposition {dense:8.2f} ms, "
                  f"ratio {dense / op:.2f}x ({'met' if dense / op >= 2 else 'NOT met'} >= 2x), max diff {diff:.1e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("decode", "moe", "all"), default="all")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    if a.part in ("moe", "all"):
        bench_moe(a)
    if a.part in ("decode", "all"):
        bench_decode(a)


if __name__ == "__main__":
    main()
