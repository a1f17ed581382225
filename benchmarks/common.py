"""Benchmark harness: each contender in its own process, timed in interleaved rounds, medians.

A contender is a picklable factory `make() -> callable()` (one batch-1 inference per call). Each
runs in a spawned process with the same thread count; the parent asks them in turn for `calls`
timed calls per round, so slow phases of a noisy machine hit every contender alike.

Between two contenders the parent waits SETTLE_S: onnxruntime's (and OpenMP's) idle worker threads
keep spinning for tens of milliseconds after a run, and on a 2-core machine a spinning neighbour
doubles the next contender's time (measured: a 3 ms MatMul timed at 7 ms, bimodal, without the pause).
Sessions timed call by call inside one process suffer the same, so every contender gets its own.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import time
from pathlib import Path

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
SETTLE_S = 0.3
PROCS = int(os.environ.get("BENCH_PROCS", "1"))  # processes per contender (see measure)


def _worker(make, conn, threads):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["EDGEPORT_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    fn = make()
    for _ in range(3):  # warm-up: allocations, kernel selection
        fn()
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        times = []
        for _ in range(msg):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        conn.send(times)


def measure(contenders: dict, rounds: int = 6, calls: int = 20, threads: int = THREADS, procs: int = PROCS) -> dict:
    """name -> list of per-call ms over all rounds. `contenders`: name -> factory.

    `procs` > 1 runs each contender in that many processes (calls split between them): the same file
    timed in two processes can differ by up to 10% on a VM, so pooling averages that out."""
    ctx = mp.get_context("spawn")
    workers = []  # (name, process, connection)
    for name, make in contenders.items():  # started one at a time: loading must not overlap timing
        for _ in range(procs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(make, child, threads), daemon=True)
            p.start()
            child.close()  # a worker that dies closes the pipe: recv raises instead of waiting forever
            try:
                ok = parent.recv() == "ready"
            except EOFError:
                ok = False
            if not ok:
                raise RuntimeError(f"benchmark contender {name} failed to start (its traceback is above)")
            workers.append((name, p, parent))
    times = {name: [] for name in contenders}
    per_worker = max(1, calls // procs)
    for _ in range(rounds):
        for name, _, conn in workers:
            time.sleep(SETTLE_S)  # let the previous contender's worker threads stop spinning
            conn.send(per_worker)
            times[name].extend(conn.recv())
    for _, p, conn in workers:
        conn.send(None)
        p.join(timeout=30)
    return times


def report(title: str, times: dict, baseline: str) -> dict:
    """Print medians and ratios to `baseline`; return name -> median ms."""
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"\n{title}  (median of {len(next(iter(times.values())))} calls, {THREADS} threads)")
    print(f"  {'contender':44s} {'median ms':>10s} {'p90 ms':>8s} {'x ' + baseline:>14s}")
    for n, t in times.items():
        p90 = sorted(t)[int(0.9 * (len(t) - 1))]
        print(f"  {n:44s} {med[n]:10.2f} {p90:8.2f} {med[n] / med[baseline]:13.2f}x")
    return med


def ensure_optimum_venv(venv: Path) -> Path | None:
    """A venv with optimum-onnx (it needs transformers < 4.58) and onnxruntime, made on first use by
    benchmarks/peers/optimum_venv.sh; its python, or None when the setup failed."""
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import optimum.exporters.onnx"],
                                      capture_output=True).returncode == 0:
        return py
    print(f"setting up {venv} with benchmarks/peers/optimum_venv.sh ...", flush=True)
    r = subprocess.run(["bash", str(Path(__file__).parent / "peers" / "optimum_venv.sh"), str(venv)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"optimum venv setup failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}", flush=True)
        return None
    return py


def optimum_export(venv: Path, ckpt: Path, task: str, out: Path) -> Path | None:
    """`optimum-cli export onnx` of an HF checkpoint folder (default opset), in the optimum venv."""
    if (out / "model.onnx").exists():
        return out / "model.onnx"
    py = ensure_optimum_venv(venv)
    if py is None:
        return None
    r = subprocess.run([str(py.parent / "optimum-cli"), "export", "onnx", "--model", str(ckpt), "--task", task,
                        str(out)], capture_output=True, text=True)
    if r.returncode or not (out / "model.onnx").exists():
        print("optimum export failed:", (r.stderr or r.stdout).strip().splitlines()[-2:], flush=True)
        return None
    return out / "model.onnx"


def with_optimum_int8(fp32: Path | None) -> dict:
    """{"optimum fp32": fp32, "optimum int8": model.int8.onnx beside it} ({} when the export failed): the int8 is
    onnxruntime's quantize_dynamic (per-channel, QInt8) of Optimum's export, made once (shared/PEERS.md recipe)."""
    if fp32 is None:
        return {}
    int8 = fp32.with_name("model.int8.onnx")
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(fp32, int8, per_channel=True, weight_type=QuantType.QInt8)
    return {"optimum fp32": fp32, "optimum int8": int8}


def torch_call(model, feeds):
    """One eager inference per call (torch.inference_mode) on numpy `feeds`: a dict (keyword inputs)
    or a list (positional inputs)."""
    import torch

    if isinstance(feeds, dict):
        kw, args = {k: torch.from_numpy(v) for k, v in feeds.items()}, []
    else:
        kw, args = {}, [torch.from_numpy(v) for v in feeds]

    def call():
        with torch.inference_mode():
            return model(*args, **kw)

    return call


def make_raw_ort(path, feeds: dict):
    """A plain onnxruntime session (ORT_ENABLE_ALL, THREADS) on another exporter's file."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    f = {k: v for k, v in feeds.items() if k in names}
    return lambda: sess.run(None, f)
