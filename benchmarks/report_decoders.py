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
process per contender per round, and records the median ms/token over rounds. After the timing, still under
the lock (profiling is a measurement, not timed itself): an onnxruntime per-op profile of one decode step
(1 new token after PAST cached positions, the median step's) of each contender's ONNX graph, GenAI's
model.onnx included, loaded in plain onnxruntime with the same feed shapes (report_encoders.profile_ops),
and each decode row's bytes read per token (weights_bytes + kv_bytes: decode_bytes) for the report's
bandwidth floor.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report_encoders import profile_ops, run_child, size_mib  # noqa: E402

PROMPT, STEPS = 128, 64
GATHERS = ("Gather", "GatherBlockQuantized")  # ops that read one row of a table per token


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
    past = PROMPT + steps // 2  # the median decode step's cached length
    profiles = profile_decoders(paths, model, past, head_dim(ckpt), 4 if quick else 20)
    for r in decode:
        r.update(decode_bytes(artifact_file(paths[f"{r['contender']} {r['precision']}"]), past, head_dim(ckpt)))
    notes = [f"Decoders: {model}, batch 1, prompt {PROMPT}, {steps} greedy steps, median decode-step ms of the last "
             f"of two generations per process, median over {rounds} interleaved rounds (a fresh process per contender "
             "per round). edgeport int4 is the `int4` scheme (int4-b32-a8: MatMulNBits block 32, accuracy_level 4); "
             "GenAI's is its builder's `-p int4` default.",
             f"Decoder profiles: one decode step (1 new token after {past} cached positions, the median step's) "
             f"averaged over {4 if quick else 20} steps, every graph in plain onnxruntime (the main venv's; "
             "make_ort's options: ORT_ENABLE_ALL, 2 intra-op threads) with the same feed shapes: onnxruntime-genai's model.onnx is "
             "measured as a graph under the same runtime, not as GenAI runs it (its runtime shares the past and "
             "present cache buffers, genai_config past_present_share_buffer; here, as in edgeport's graph, the "
             "past is copied into a new present each step). Bytes per token: every weight initializer once, "
             "embedding tables read by Gather / GatherBlockQuantized one row per token, plus the KV cache read "
             "at that length (decode_bytes); floor = bytes / the machine stage's memory bandwidth."]
    return {"decode": decode, "exports": rows, "profiles": profiles, "notes": notes}


def artifact_file(folder: Path) -> Path:
    """The ONNX file of a contender folder: edgeport's manifest `artifact`, or GenAI's model.onnx."""
    m = Path(folder) / "edgeport.json"
    return Path(folder) / (json.loads(m.read_text())["artifact"] if m.exists() else "model.onnx")


def head_dim(ckpt: Path) -> int:
    """Attention head size of an HF config.json folder (head_dim, else hidden_size / num_attention_heads)."""
    c = json.loads((Path(ckpt) / "config.json").read_text())
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
          "tensor(int32)": "int32"}


def decode_step_feeds(inputs, past: int, head: int, seed: int = 0) -> dict:
    """Feeds of one decode step, batch 1: 1 new token after `past` cached positions.

    inputs: [(name, shape, dtype)] of the graph (shape: ints, or strings/None for symbolic axes; dtype an
    onnxruntime type string such as "tensor(float)"). input_ids (1, 1) in [3, 1000); attention_mask ones
    (1, past + 1); position_ids [[past]]; every input named past* a normal(0, 1) cache whose symbolic axes
    are: first -> 1 (batch), second to last -> past, last -> head (GenAI's symbolic kv_cache_dim); static
    axes kept (kv heads, edgeport's head size, a stacked cache's layers). ValueError for any other input
    or symbolic axis."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape, dtype in inputs:
        dt = DTYPES[dtype]
        if name == "input_ids":
            out[name] = rng.integers(3, 1000, (1, 1)).astype(dt)
        elif name == "attention_mask":
            out[name] = np.ones((1, past + 1), dt)
        elif name == "position_ids":
            out[name] = np.array([[past]], dt)
        elif name.startswith("past"):
            dims = [d if isinstance(d, int) else {0: 1, len(shape) - 2: past, len(shape) - 1: head}.get(i)
                    for i, d in enumerate(shape)]
            if None in dims:
                raise ValueError(f"{name}: symbolic axis {shape[dims.index(None)]!r} of {shape} is not batch/past/head")
            out[name] = rng.standard_normal(dims).astype(dt)
        else:
            raise ValueError(f"decode step feeds: unknown input {name!r}")
    return out


def session_step_feeds(sess, past: int, head: int) -> dict:
    """decode_step_feeds for an onnxruntime InferenceSession's inputs (profile_ops' make_feeds)."""
    return decode_step_feeds([(i.name, i.shape, i.type) for i in sess.get_inputs()], past, head)


def graph_inputs(path: Path) -> list:
    """[(name, shape, onnxruntime type string)] of an ONNX file's graph inputs (external data not read)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in g.initializer}
    types = {onnx.TensorProto.FLOAT: "tensor(float)", onnx.TensorProto.FLOAT16: "tensor(float16)",
             onnx.TensorProto.INT64: "tensor(int64)", onnx.TensorProto.INT32: "tensor(int32)"}
    return [(i.name, [d.dim_value if d.HasField("dim_value") else d.dim_param or None
                      for d in i.type.tensor_type.shape.dim], types[i.type.tensor_type.elem_type])
            for i in g.input if i.name not in inits]


def decode_bytes(path: Path, past: int, head: int) -> dict:
    """Bytes one decode step reads at `past` cached positions, batch 1: {weights_bytes, kv_bytes}.

    weights_bytes: every initializer of the graph whole (size from its dims and dtype; external data is not
    read), except a table only read by Gather / GatherBlockQuantized (the embedding) counts one row
    (size / rows). kv_bytes: the past cache feeds of decode_step_feeds (every layer's keys and values at
    `past`). Not counted: activations, the present cache written, Constant-node tensors (small)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    gathered, other = set(), set()  # initializers read as a gathered table (data, scales, zero points) / otherwise
    for n in g.node:
        for k, name in enumerate(n.input):
            (gathered if n.op_type in GATHERS and k != 1 else other).add(name)
    weights = 0
    for t in g.initializer:
        n = tensor_bytes(t)
        if t.name in gathered and t.name not in other and t.dims:
            n //= t.dims[0]  # one row per token
        weights += n
    kv = sum(v.nbytes for k, v in decode_step_feeds(graph_inputs(path), past, head).items() if k.startswith("past"))
    return {"weights_bytes": int(weights), "kv_bytes": int(kv)}


def tensor_bytes(t) -> int:
    """Bytes of an onnx TensorProto's data from its dims and data_type (4-bit types: two per byte)."""
    import onnx

    n = int(np.prod(t.dims))
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (n + 1) // 2
    return n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def profile_decoders(paths: dict, model: str, past: int, head: int, runs: int = 20) -> list:
    """Per-op profile rows (report_render schema) of one decode step at `past` for each contender folder
    (label "CONTENDER PRECISION" -> folder); GenAI's model.onnx is named "onnxruntime-genai graph"."""
    rows = []
    for label, folder in paths.items():
        name, prec = label.rsplit(" ", 1)
        ops = profile_ops(str(artifact_file(folder)), past, runs,
                          functools.partial(session_step_feeds, past=past, head=head))
        rows.append({"model": model, "contender": name.replace("onnxruntime-genai", "onnxruntime-genai graph"),
                     "precision": prec, "seq": past, "call": f"decode step after {past} cached positions",
                     "ops": ops})
        print(f"profile {label}: {sum(ops.values()):.2f} ms per step", flush=True)
    return rows


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
