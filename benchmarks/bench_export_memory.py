"""Export memory at scale: peak RSS, disk written and wall time of exporting Mistral-architecture
checkpoints (random weights saved as safetensors), each export in its own process under
`/usr/bin/time -v`.

    python benchmarks/bench_export_memory.py make --size 125m --out /tmp/ckpt-125m
    python benchmarks/bench_export_memory.py run --checkpoint /tmp/ckpt-125m [--streaming] [--no-validate]

`make` writes config.json + model.safetensors (fp32, written one tensor at a time so the maker itself
stays small). `run` times one `edgeport export` (in-memory or --streaming) in a child process and prints
peak RSS (ru_maxrss of the child, from /usr/bin/time -v), wall seconds, bytes on disk, and the ratio
of peak RSS to the fp32 weight bytes.
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
                 num_key_value_heads=4),
}


def make_checkpoint(size: str, out: Path, seed: int = 0) -> int:
    """Write a random fp32 Mistral checkpoint of `size` into `out`; returns the parameter count.

    Tensors are generated and written one at a time (safetensors' own writer needs them all in memory,
    so the file is written here in safetensors' documented layout: u64 header length, JSON header,
    row-major data)."""
    import numpy as np

    cfg = {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "vocab_size": 32000,
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
    """HF Mistral state-dict names -> shapes for config dict `cfg`."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    d = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (v, h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
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


def run_export(checkpoint: Path, streaming: bool, validate: bool, quantize: str | None) -> dict:
    """One `edgeport export` of `checkpoint` to ONNX in a child process -> measurements."""
    weights = (checkpoint / "model.safetensors").stat().st_size
    with tempfile.TemporaryDirectory(dir=checkpoint.parent) as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "edgeport.cli", "export", "--model", str(checkpoint), "--target", "onnx",
               "-o", str(out)]
        cmd += ["--streaming"] if streaming else []
        cmd += [] if validate else ["--no-validate"]
        cmd += ["--quantize", quantize] if quantize else []
        res = timed(cmd)
        res["disk_gb"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e9 if out.exists() else 0
    res["weights_gb"] = weights / 1e9
    res["rss_x_weights"] = res["peak_rss_gb"] / res["weights_gb"]
    return res


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
    """CLI: `make` a checkpoint or `run` one export and print its measurements as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--size", choices=sorted(SIZES), default="125m")
    m.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--checkpoint", type=Path, required=True)
    r.add_argument("--streaming", action="store_true")
    r.add_argument("--no-validate", action="store_true")
    r.add_argument("--quantize")
    sub.add_parser("profile", help="in-process export; peak RSS (anon, file-backed) per progress step")
    a, rest = p.parse_known_args(argv)
    if a.cmd == "profile":  # everything after `profile` goes to `edgeport export`
        for step, anon, file in profile_steps(rest):
            print(f"{anon:7.3f} GB anon {file:7.3f} GB file  {step}")
        return
    if a.cmd == "make":
        print(json.dumps({"parameters": make_checkpoint(a.size, a.out), "out": str(a.out)}))
    else:
        res = run_export(a.checkpoint, a.streaming, not a.no_validate, a.quantize)
        print(res.pop("tail"), file=sys.stderr)
        print(json.dumps(res))


if __name__ == "__main__":
    main()
