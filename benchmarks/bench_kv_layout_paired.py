"""Paired in-process A/B of bench_kv_layout.py's folders: stacked vs per-layer decode steps alternated step by
step (one process, the same tokens, onnxruntime thread spinning off so one session's idle threads cannot slow
the other), so a shared machine's slow phases hit both alike.

    flock /tmp/edgeport-bench.lock python benchmarks/bench_kv_layout_paired.py WORK [REPS]

WORK: bench_kv_layout.py build's --work (ep-{stacked,per-layer}-{fp32,int4}). Prompt 128, 64 steps, REPS
(default 6) repetitions after one warm-up. Prints per precision the median step ms of each, the median of
the per-step differences and ratios, and the share of steps per-layer was faster; then one JSON line."""
import json, os, statistics, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgeport.runtime.generate import open_decoder
from edgeport.runtime.session import ort_session_config

work = Path(sys.argv[1])
PROMPT, STEPS, REPS = 128, 64, int(sys.argv[2]) if len(sys.argv) > 2 else 6
out = {"load_before": os.getloadavg()}
for prec in ("fp32", "int4"):
    decs = {}
    for lay in ("stacked", "per-layer"):
        f = work / f"ep-{lay}-{prec}"
        m = json.loads((f / "edgeport.json").read_text())
        with ort_session_config({"session.intra_op.allow_spinning": "0"}):  # idle threads never steal the other's cores
            decs[lay] = open_decoder(f / m["artifact"], m["decoder"], 2)
    ids = np.random.default_rng(0).integers(3, 1000, (1, PROMPT))
    times = {k: [] for k in decs}
    for rep in range(REPS + 1):
        nxt = {}
        for k, d in decs.items():
            d.reset(1)
            nxt[k] = d.step(ids, np.ones_like(ids), np.arange(PROMPT)[None])[:, -1].argmax(-1)[:, None]
        tok = nxt["stacked"]
        for i in range(STEPS):
            order = ("stacked", "per-layer") if (i + rep) % 2 == 0 else ("per-layer", "stacked")
            for k in order:
                t0 = time.perf_counter()
                logits = decs[k].step(tok, np.ones_like(tok), np.array([[PROMPT + i]]))
                dt = (time.perf_counter() - t0) * 1e3
                if rep:  # rep 0 is the warm-up
                    times[k].append(dt)
                if k == "stacked":
                    nt = logits[:, -1].argmax(-1)[:, None]
            tok = nt
    a, b = np.array(times["stacked"]), np.array(times["per-layer"])
    out[prec] = {"steps": len(a), "stacked_ms": float(np.median(a)), "per_layer_ms": float(np.median(b)),
                 "median_diff_ms": float(np.median(b - a)), "median_ratio": float(np.median(b / a)),
                 "per_layer_faster_share": float(np.mean(b < a))}
    print(prec, out[prec], flush=True)
    del decs
out["load_after"] = os.getloadavg()
print(json.dumps(out))
