"""Decoder stage of benchmarks/report.py: edgeport vs onnxruntime-genai's model builder, same checkpoint.

    python benchmarks/report_decoders.py prepare|measure --work DIR [--json OUT] [--genai-venv V] [--quick]
    python benchmarks/report_decoders.py time --work DIR [--rounds 5] [--json OUT]   # timing of built folders

The checkpoint: a Mistral-architecture model (random fp32 weights, HF safetensors folder written by
benchmarks/bench_export_memory.py's make_checkpoint: 250M = hidden 1024, 16 layers, GQA 16:4; --quick
125M). `prepare` writes it and builds the peer venv (benchmarks/peers/genai_venv.sh). `measure` (under
the timing lock) exports it four ways, each in a child process (wall time and peak RSS from wait4):
edgeport fp32 (`export ... text-generation`, default lowering: GroupQueryAttention) and int4 (quantize
scheme `int4` = int4-b32-a8: MatMulNBits block 32, int8 compute), GenAI builder `-p fp32|int4 -e cpu`;
then times greedy decoding (prompt 128, 64 steps; peers/decode_once.py) in interleaved rounds, a fresh
process per contender per round, and records the median ms/token over rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report_encoders import run_child, size_mib  # noqa: E402

PROMPT, STEPS = 128, 64


def model_name(quick: bool) -> str:
    return f"Mistral {'125M' if quick else '250M'} (random weights)"


def prepare(work: Path, venv: Path, quick: bool) -> Path:
    """The checkpoint folder (written once) and the GenAI venv."""
    from bench_export_memory import make_checkpoint

    ckpt = work / ("ckpt-125m" if quick else "ckpt-250m")
    if not (ckpt / "model.safetensors").is_file():
        make_checkpoint("125m" if quick else "250m", ckpt)
    write_tokenizer(ckpt, json.loads((ckpt / "config.json").read_text())["vocab_size"])
    subprocess.run(["bash", str(HERE / "peers" / "genai_venv.sh"), str(venv)], check=True)
    return ckpt


def write_tokenizer(ckpt: Path, vocab: int) -> None:
    """A word-level tokenizer.json over `vocab` tokens (<unk>, <s>, </s>, t3 ...): GenAI's builder loads the
    checkpoint's tokenizer with transformers and refuses a folder without one (the timing feeds ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(ckpt / "tokenizer.json"))
    (ckpt / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))


def folders(work: Path) -> dict:
    """label "CONTENDER PRECISION" -> the folder `prepare` builds it in under `work` (the order timed)."""
    return {f"{name} {prec}": work / f"{short}-{prec}" for name, short in
            (("edgeport", "ep"), ("onnxruntime-genai", "genai")) for prec in ("fp32", "int4")}


def exports(work: Path, ckpt: Path, venv: Path, model: str) -> tuple[dict, list]:
    """Build the four contenders (timed, peak RSS); label -> folder, and export rows."""
    py = str(venv / "bin" / "python")
    out = folders(work)
    ep32, ep4 = str(out["edgeport fp32"]), str(out["edgeport int4"])
    jobs = {
        "edgeport fp32": ("", f"from edgeport.export import export; export({str(ckpt)!r}, 'onnx', 'text-generation', "
                              f"out_dir={ep32!r}, quiet=True)"),
        "edgeport int4": ("", "from edgeport.quantize import perplexity, quantize_artifact; perplexity.MAX_TOKENS = 512; "
                              f"quantize_artifact({ep32!r}, 'int4', out_dir={ep4!r}, quiet=True)"),
        "onnxruntime-genai fp32": (py, ["-m", "onnxruntime_genai.models.builder", "-i", str(ckpt), "-o",
                                        str(out["onnxruntime-genai fp32"]), "-p", "fp32", "-e", "cpu", "-c",
                                        str(work / "cache")]),
        "onnxruntime-genai int4": (py, ["-m", "onnxruntime_genai.models.builder", "-i", str(ckpt), "-o",
                                        str(out["onnxruntime-genai int4"]), "-p", "int4", "-e", "cpu", "-c",
                                        str(work / "cache")]),
    }
    paths, rows = {}, []
    for label, (python, code) in jobs.items():
        out_dir = out[label]
        shutil.rmtree(out_dir, ignore_errors=True)
        r = run_child("", python, code) if python else run_child(code)
        paths[label] = out_dir
        name, prec = label.rsplit(" ", 1)
        size = size_mib(out_dir / "model.onnx") if (out_dir / "model.onnx").exists() else \
            round(sum(f.stat().st_size for f in out_dir.glob("model.*")) / 2**20, 2)
        rows.append({"model": model, "contender": name, "precision": prec, **r, "size_mib": size})
        print(f"{label}: {rows[-1]}", flush=True)
    return paths, rows


def decode_once(kind: str, folder: Path, venv: Path, prompt: int, steps: int) -> dict:
    py = str(venv / "bin" / "python") if kind == "genai" else sys.executable
    r = subprocess.run([py, str(HERE / "peers" / "decode_once.py"), kind, str(folder), "--prompt", str(prompt),
                        "--steps", str(steps)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"decode_once {kind} {folder} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(work: Path, venv: Path, quick: bool) -> dict:
    model = model_name(quick)
    ckpt = work / ("ckpt-125m" if quick else "ckpt-250m")
    paths, rows = exports(work, ckpt, venv, model)
    rounds, steps = (1, 16) if quick else (5, STEPS)
    decode = time_decoding(paths, venv, model, rounds, steps)
    notes = [f"Decoders: {model}, batch 1, prompt {PROMPT}, {steps} greedy steps, median decode-step ms of the last "
             f"of two generations per process, median over {rounds} interleaved rounds (a fresh process per contender "
             "per round). edgeport int4 is the `int4` scheme (int4-b32-a8: MatMulNBits block 32, accuracy_level 4); "
             "GenAI's is its builder's `-p int4` default."]
    return {"decode": decode, "exports": rows, "notes": notes}


def time_decoding(paths: dict, venv: Path, model: str, rounds: int, steps: int) -> list:
    """Greedy decode timing of built folders (label "CONTENDER PRECISION" -> folder): every contender once per
    round, each in a fresh process; -> rows with the median ms/token and prefill ms over rounds."""
    runs = {label: [] for label in paths}
    for _ in range(rounds):  # interleaved: every contender once per round, each in a fresh process
        for label, folder in paths.items():
            runs[label].append(decode_once("genai" if "genai" in label else "edgeport", folder, venv, PROMPT, steps))
    decode = []
    for label, rs in runs.items():
        name, prec = label.rsplit(" ", 1)
        decode.append({"model": model, "contender": name, "precision": prec, "rounds": len(rs),
                       "ms_per_token": round(statistics.median(r["ms_per_token"] for r in rs), 3),
                       "prefill_ms": round(statistics.median(r["prefill_ms"] for r in rs), 2)})
        print(f"{label}: {decode[-1]}", flush=True)
    return decode


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=("prepare", "measure", "time"),
                    help="time: only the decode timing of the four folders already built in --work")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--genai-venv", type=Path, default=Path("/tmp/genai-venv"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="time: interleaved rounds")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.phase == "prepare":
        prepare(a.work, a.genai_venv, a.quick)
    elif a.phase == "time":
        decode = time_decoding(folders(a.work), a.genai_venv, model_name(a.quick), a.rounds, 16 if a.quick else STEPS)
        if a.json:
            a.json.write_text(json.dumps({"decode": decode}, indent=1))
    else:
        a.json.write_text(json.dumps(measure(a.work, a.genai_venv, a.quick), indent=1))


if __name__ == "__main__":
    main()
