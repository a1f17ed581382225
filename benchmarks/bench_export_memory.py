"""Export memory at scale: peak RSS, disk written and wall time of exporting Mistral- and
Mixtral-architecture checkpoints (random weights saved as safetensors), each export in its own process
under `/usr/bin/time -v`, for edgeport (streaming and in-memory, fp32 and int4) and onnxruntime-genai's
model builder (fp32 and int4, its own venv: benchmarks/peers/genai_venv.sh; Mistral only: its builder
has no Mixtral), then a linear fit of each against the parameter count, per architecture, extrapolated
to Mistral-7B (Mistral rows) and Mixtral-8x7B (Mixtral rows).

    python benchmarks/bench_export_memory.py make --size 125m --out /tmp/ckpt-125m
    python benchmarks/bench_export_memory.py run --checkpoint /tmp/ckpt-125m [--streaming] [--quantize int4]
    bash benchmarks/peers/genai_venv.sh /tmp/genai-venv
    flock /tmp/edgeport-bench.lock python benchmarks/bench_export_memory.py sweep --size 125m \
        --checkpoint /tmp/ckpt-125m --venv /tmp/genai-venv --results /tmp/export-memory.json   # per size
    python benchmarks/bench_export_memory.py fit --results /tmp/export-memory.json

`make` writes config.json + model.safetensors (fp32, written one tensor at a time so the maker itself
stays small) + a word-level tokenizer.json over the vocabulary (t3, t4, ...: the weights are random), so
its exports run in `edgeport generate` (which refuses an export without a tokenizer) and GenAI's builder
takes the folder. Peak RSS is ru_maxrss of the child (/usr/bin/time -v): resident anonymous memory plus
the file-backed pages it has mapped (the checkpoint, the artifact's external data). `sweep` skips what
this machine cannot hold and records why (SKIP). `profile` runs one export in this process and prints
the peak anonymous and file-backed RSS of each progress step.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Mistral-architecture sizes (vocab 32000, GQA, untied lm_head): roughly the named parameter counts.
SIZES = {
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=4),
    "250m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, num_attention_heads=16,
                 num_key_value_heads=4),
    "500m": dict(hidden_size=1280, intermediate_size=3584, num_hidden_layers=20, num_attention_heads=20,
                 num_key_value_heads=4),  # 436M parameters
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=20, num_attention_heads=32,
               num_key_value_heads=8),  # 1.03B parameters
    # Mixtral architecture (Mistral + 8 experts, top 2, as Mixtral-8x7B): most parameters in the experts.
    "moe-150m": dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=8,
                     num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2),  # 140M parameters
    "moe-350m": dict(hidden_size=768, intermediate_size=1536, num_hidden_layers=10, num_attention_heads=12,
                     num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2),  # 348M parameters
    "moe-600m": dict(hidden_size=1024, intermediate_size=2048, num_hidden_layers=10, num_attention_heads=16,
                     num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2),  # 595M parameters
}


def architecture(size: str) -> str:
    """"mixtral" for the SIZES with experts, else "mistral"."""
    return "mixtral" if "num_local_experts" in SIZES[size] else "mistral"


def make_checkpoint(size: str, out: Path, seed: int = 0) -> int:
    """Write a random fp32 Mistral (or Mixtral) checkpoint of `size` into `out`; returns the parameter count.

    Tensors are generated and written one at a time (safetensors' own writer needs them all in memory,
    so the file is written here in safetensors' documented layout: u64 header length, JSON header,
    row-major data)."""
    import numpy as np

    arch = architecture(size)
    cfg = {"model_type": arch, "architectures": [arch.capitalize() + "ForCausalLM"], "vocab_size": 32000,
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "sliding_window": 4096, "tie_word_embeddings": False, **SIZES[size]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    shapes = tensor_shapes(cfg)
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    with open(out / "model.safetensors", "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for name, shape in shapes.items():
            if name.endswith("norm.weight"):
                t = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
            else:
                t = 0.02 * rng.standard_normal(shape, dtype=np.float32)
            f.write(t.tobytes())
    return sum(int(np.prod(s)) for s in shapes.values())


def tensor_shapes(cfg: dict) -> dict:
    """HF Mistral (or Mixtral: original expert keys, block_sparse_moe.experts.M.w1/w2/w3) state-dict
    names -> shapes for config dict `cfg`."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    d = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (v, h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h)})
        experts = cfg.get("num_local_experts")
        if experts:
            shapes[p + "block_sparse_moe.gate.weight"] = (experts, h)
            for e in range(experts):
                q = f"{p}block_sparse_moe.experts.{e}."
                shapes.update({q + "w1.weight": (i, h), q + "w2.weight": (h, i), q + "w3.weight": (i, h)})
        else:
            shapes.update({p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                           p + "mlp.down_proj.weight": (h, i)})
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (v, h)})
    return shapes


def timed(cmd: list) -> dict:
    """Run `cmd` under /usr/bin/time -v -> {peak_rss_gb, wall_s, rc, tail}."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", r.stderr).group(1)
    secs = sum(float(x) * 60 ** k for k, x in enumerate(reversed(wall.split(":"))))
    return {"peak_rss_gb": rss * 1024 / 1e9, "wall_s": secs, "rc": r.returncode,
            "tail": "\n".join((r.stdout + r.stderr).splitlines()[-40:])}


# What each contender runs: (contender, path, precision) -> argv after the python executable.
# edgeport in-memory int4 is `edgeport export --quantize int4`: the fp32 export, then `edgeport quantize`
# of it in the same process (the two-step path streaming replaces).
def contender_cmd(contender: str, path: str, precision: str, checkpoint: Path, out: Path, cache: Path) -> list:
    """argv (after the interpreter) of one export; ValueError for a combination that does not exist."""
    if contender == "edgeport":
        cmd = ["-m", "edgeport.cli", "export", "--model", str(checkpoint), "--target", "onnx", "-q", "-o", str(out)]
        return cmd + (["--streaming"] if path == "streaming" else []) + \
            (["--quantize", "int4"] if precision == "int4" else [])
    if contender == "onnxruntime-genai" and path == "builder":
        return ["-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint), "-o", str(out), "-p", precision,
                "-e", "cpu", "-c", str(cache)]
    raise ValueError(f"no such contender/path: {contender} {path}")


def run_export(checkpoint: Path, contender: str = "edgeport", path: str = "streaming", precision: str = "fp32",
               python: str = sys.executable) -> dict:
    """One export of `checkpoint` in a child process under /usr/bin/time -v -> measurements: peak RSS (GB),
    wall (s), disk written (GB: the output folder plus the builder's cache), fp32 weight bytes, ratios."""
    weights = (checkpoint / "model.safetensors").stat().st_size
    with tempfile.TemporaryDirectory(dir=checkpoint.parent) as tmp:
        out, cache = Path(tmp) / "out", Path(tmp) / "cache"
        res = timed([python, *contender_cmd(contender, path, precision, checkpoint, out, cache)])
        res["disk_gb"] = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 1e9
    res.update(contender=contender, path=path, precision=precision, weights_gb=weights / 1e9,
               parameters=weights // 4)
    res["rss_x_weights"] = res["peak_rss_gb"] / res["weights_gb"]
    return res


# Runs left out at a size, with the reason (this machine: 24 GiB shared by five agents, ~9 GB per run).
SKIP = {("1b", "edgeport", "in-memory"): "in-memory edgeport needs ~5x the weights (20 GB at 1B)",
        ("1b", "onnxruntime-genai", "builder", "int4"): "the builder's int4 path needs ~2.9x (12 GB at 1B)",
        ("moe-600m", "edgeport", "in-memory"): "in-memory edgeport needs ~5.5x the weights (13 GB at 595M)"}
GENAI_MIXTRAL = ("onnxruntime-genai 0.18's builder has no MixtralForCausalLM (NotImplementedError: "
                 "'model is not currently supported')")


def sweep(size: str, checkpoint: Path, venv: Path, results: Path, paths: tuple = ("streaming", "in-memory", "builder"),
          label: str | None = None) -> list:
    """Every contender on one checkpoint (edgeport streaming and in-memory, fp32 and int4; the GenAI
    builder fp32 and int4), each in its own process; rows appended to the JSON list in `results`.
    `paths`: the paths to run (e.g. ("streaming", "builder") for the export-time comparison alone);
    `label`: recorded in each row (which edgeport code ran, e.g. a commit)."""
    rows = json.loads(results.read_text()) if results.is_file() else []
    for contender, path in (("edgeport", "streaming"), ("edgeport", "in-memory"), ("onnxruntime-genai", "builder")):
        if path not in paths:
            continue
        for precision in ("fp32", "int4"):
            why = SKIP.get((size, contender, path)) or SKIP.get((size, contender, path, precision))
            if contender == "onnxruntime-genai" and architecture(size) == "mixtral":
                why = GENAI_MIXTRAL
            if why:
                rows.append({"size": size, "architecture": architecture(size), "contender": contender, "path": path,
                             "precision": precision, "skipped": why})
                continue
            py = str(venv / "bin" / "python") if contender == "onnxruntime-genai" else sys.executable
            before = Path("/proc/loadavg").read_text().split()[:3]
            r = run_export(checkpoint, contender, path, precision, py)
            r["size"], r["architecture"], r["loadavg"] = size, architecture(size), Path("/proc/loadavg").read_text().split()[:3]
            r["loadavg_before"] = before  # loadavg (above) is read after the run, which adds its own load
            if label:
                r["label"] = label
            if r["rc"]:
                print(r["tail"], file=sys.stderr)
            r.pop("tail")
            rows.append(r)
            print(json.dumps(r), flush=True)
            results.write_text(json.dumps(rows, indent=1))
    results.write_text(json.dumps(rows, indent=1))
    return rows


# Parameter counts to extrapolate to, per architecture (the presets' configs: mistral-7b; Mixtral-8x7B's
# published count): each architecture's rows are fitted apart and extrapolated to its own model.
TARGETS = {"mistral": ("Mistral-7B", 7_241_732_096), "mixtral": ("Mixtral-8x7B", 46_702_792_704)}


def fit(rows: list) -> list:
    """Least-squares line y = a + b * parameters per (architecture, contender, path, precision) and measure
    (peak RSS GB, wall s, disk GB) over the measured sizes (rows without an architecture are Mistral's)
    -> [{..., a, b, target, at target, x fp32 weights at target}]."""
    import numpy as np

    groups = {}
    for r in rows:
        if "skipped" not in r and r.get("rc") == 0:
            key = (r.get("architecture", "mistral"), r["contender"], r["path"], r["precision"])
            groups.setdefault(key, []).append(r)
    out = []
    for key, rs in sorted(groups.items()):
        n = np.array([r["parameters"] for r in rs], float)
        target, params = TARGETS[key[0]]
        line = {"architecture": key[0], "contender": key[1], "path": key[2], "precision": key[3], "sizes": len(rs),
                "target": target}
        for measure in ("peak_rss_gb", "wall_s", "disk_gb"):
            y = np.array([r[measure] for r in rs], float)
            b, a = np.polyfit(n, y, 1) if len(rs) > 1 else (y[0] / n[0], 0.0)
            line[measure] = {"a": float(a), "b_per_billion": float(b * 1e9), "at_target": float(a + b * params)}
        line["peak_rss_x_fp32_weights"] = line["peak_rss_gb"]["at_target"] / (4 * params / 1e9)
        out.append(line)
    return out


def fit_table(lines: list) -> str:
    """Markdown rows: architecture, contender, path, precision, sizes fitted, GB per billion parameters,
    then the TARGETS model of that architecture with the peak RSS extrapolated and its ratio to the fp32
    weights (wall time is left out: one run per size on a shared machine, see README)."""
    rows = ["| architecture | contender | path | precision | sizes fitted | peak RSS per 1B params | "
            "extrapolated to | peak RSS (x fp32 weights) |", "|" + "---|" * 8]
    for ln in lines:
        rows.append("| " + " | ".join([ln["architecture"], ln["contender"], ln["path"], ln["precision"],
                                       str(ln["sizes"]), f"{ln['peak_rss_gb']['b_per_billion']:.2f} GB",
                                       ln["target"], f"{ln['peak_rss_gb']['at_target']:.0f} GB "
                                       f"({ln['peak_rss_x_fp32_weights']:.2f}x)"]) + " |")
    return "\n".join(rows)


def rss_gb() -> tuple:
    """(RssAnon, RssFile) of this process in GB, from /proc/self/status."""
    got = dict(re.findall(r"^(RssAnon|RssFile):\s+(\d+) kB", open("/proc/self/status").read(), re.M))
    return int(got["RssAnon"]) * 1024 / 1e9, int(got["RssFile"]) * 1024 / 1e9


def profile_steps(argv: list) -> list:
    """Run `edgeport export argv` in this process, sampling RSS every 20 ms -> [(step, peak anon GB,
    peak file-backed GB)] per progress step (where the peak of each stage comes from)."""
    import threading

    from edgeport import cli
    from edgeport.progress import Steps

    peaks, current, stop = {}, ["start"], threading.Event()

    def sample():
        while not stop.is_set():
            a, f = rss_gb()
            old = peaks.get(current[0], (0.0, 0.0))
            peaks[current[0]] = (max(old[0], a), max(old[1], f))
            stop.wait(0.02)

    original = Steps.step

    def step(self, what):
        current[0] = what
        return original(self, what)

    Steps.step = step
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        cli.main(["export", *argv])
    finally:
        stop.set()
        t.join()
        Steps.step = original
    return [(k, round(a, 3), round(f, 3)) for k, (a, f) in peaks.items()]


def main(argv=None):
    """CLI: `make` a checkpoint, `run` one export, `sweep` every contender on one size, `fit` the results,
    `profile` one export in-process; measurements printed as JSON (fit: a markdown table too)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--size", choices=sorted(SIZES), default="125m")
    m.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--checkpoint", type=Path, required=True)
    r.add_argument("--streaming", action="store_true")
    r.add_argument("--quantize", choices=("int4",))
    w = sub.add_parser("sweep", help="every contender on one size, appended to --results")
    w.add_argument("--size", choices=sorted(SIZES), required=True)
    w.add_argument("--checkpoint", type=Path, required=True)
    w.add_argument("--venv", type=Path, required=True, help="onnxruntime-genai venv (benchmarks/peers/genai_venv.sh)")
    w.add_argument("--results", type=Path, required=True)
    w.add_argument("--paths", default="streaming,in-memory,builder",
                   help="comma-separated paths to run (streaming, in-memory, builder)")
    w.add_argument("--label", help="recorded in each row: which edgeport code ran (e.g. a commit)")
    f = sub.add_parser("fit", help="linear fit of the sweep results against parameter count")
    f.add_argument("--results", type=Path, required=True)
    sub.add_parser("profile", help="in-process export; peak RSS (anon, file-backed) per progress step")
    a, rest = p.parse_known_args(argv)
    if a.cmd == "profile":  # everything after `profile` goes to `edgeport export`
        for step, anon, file in profile_steps(rest):
            print(f"{anon:7.3f} GB anon {file:7.3f} GB file  {step}")
        return
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if a.cmd in ("make", "sweep"):  # GenAI's builder and `edgeport generate` refuse a folder without a tokenizer
        from report_decoders import write_tokenizer
    if a.cmd == "make":
        parameters = make_checkpoint(a.size, a.out)
        write_tokenizer(a.out, json.loads((a.out / "config.json").read_text())["vocab_size"])
        print(json.dumps({"parameters": parameters, "out": str(a.out)}))
    elif a.cmd == "sweep":
        write_tokenizer(a.checkpoint, json.loads((a.checkpoint / "config.json").read_text())["vocab_size"])
        sweep(a.size, a.checkpoint, a.venv, a.results, tuple(a.paths.split(",")), a.label)
    elif a.cmd == "fit":
        lines = fit(json.loads(a.results.read_text()))
        print(json.dumps(lines, indent=1))
        print(fit_table(lines))
    else:
        res = run_export(a.checkpoint, "edgeport", "streaming" if a.streaming else "in-memory", a.quantize or "fp32")
        print(res.pop("tail"), file=sys.stderr)
        print(json.dumps(res))


if __name__ == "__main__":
    main()
