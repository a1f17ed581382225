"""`edgeport bench FOLDER`: latency of one export on this machine, with the machine's facts and limits.

A table on stdout, progress on stderr, everything (facts, limits, per-shape results) in --json OUT.
The limits are measured in the same run (nothing cached); --limits-from reuses those of an earlier
--json file, and says so. Cheap to import: the work lives in runtime/bench.py, machine.py, flops.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.runtime.latency import check_seconds

SCHEMA = 1  # version of the --json layout


def _progress(text: str):
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _check_json_out(out: Path) -> None:
    """Refuse, before any timing, a --json path that cannot be written: a folder, a missing folder, or
    a file or folder without write permission (EdgeportError)."""
    if out.is_dir():
        raise EdgeportError(f"--json {out}: is a folder; give a file path")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise EdgeportError(f"--json {out}: its folder does not exist")
    if not os.access(out if out.exists() else parent, os.W_OK):
        raise EdgeportError(f"--json {out}: not writable here")


def _other_machine(d: dict, facts) -> str | None:
    """Words naming how the machine of an earlier `bench --json` (its "machine" block) differs from this
    one's `facts` (CPU model, flags), or None when it matches or was not recorded."""
    mach = d.get("machine") or {}
    diffs = [f"{k} {mach[k]!r} there, {getattr(facts, k)!r} here" for k in ("cpu_model", "flags")
             if k in mach and mach[k] != getattr(facts, k)]
    return "; ".join(diffs) or None


def _limits(a, threads: int, facts=None):
    """MachineLimits measured now, or read from --limits-from (an earlier `bench --json`; a one-line
    warning on stderr when that file's machine differs from `facts`, this one's)."""
    from edgeport.runtime.machine import MachineLimits, measure_limits

    if a.limits_from:
        try:
            d = json.loads(Path(a.limits_from).read_text())
            limits = MachineLimits(**d["limits"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EdgeportError(f"--limits-from {a.limits_from}: no limits in it ({e})") from None
        if limits.threads != threads:
            raise EdgeportError(f"--limits-from {a.limits_from}: measured at {limits.threads} threads, "
                                f"this run uses {threads}")
        other = _other_machine(d, facts) if facts is not None else None
        if other:
            _progress(f"warning: --limits-from {a.limits_from} was measured on another CPU ({other}): "
                      "the fractions compare this run with that machine's limits")
            return limits, f"read from {a.limits_from}, measured on another CPU"
        return limits, f"read from {a.limits_from}"
    _progress(f"measuring this machine's limits at {threads} threads (" + ("about a minute" if a.precise_limits
              else "about 10 s; --precise-limits for a longer, steadier one") + ")")
    limits = measure_limits(threads, precise=a.precise_limits)
    _progress(f"limits measured in {limits.seconds:.1f} s")
    return limits, f"measured now in {limits.seconds:.1f} s"


def _open(p, threads: int):
    """The Session (full-sequence graphs) or generate backend (decoders) the rows are timed on."""
    if p.kind == "decoder":
        from edgeport.runtime.generate import open_decoder

        decoder = open_decoder(p.folder / p.manifest.artifact, p.manifest.decoder, threads)
        if getattr(decoder, "device", "cpu") != "cpu":  # OrtDecoder takes CUDA where onnxruntime has it
            raise EdgeportError(f"this decoder runs on {decoder.device} here; edgeport bench measures against "
                                "the CPU's limits (use a CPU-only onnxruntime)")
        return decoder
    from edgeport.runtime import load

    # the limits are the CPU's: an ONNX graph runs on onnxruntime's CPU provider even where a GPU one exists
    cpu = {"providers": ["CPUExecutionProvider"]} if p.manifest.artifact.endswith(".onnx") else {}
    return load(p.folder, threads=threads, **cpu)


def _forward_rows(p, sess, limits, seconds: float) -> list:
    from edgeport.runtime.bench import count_at, make_feeds, time_forward, vocab_size

    path, vocab = p.folder / p.manifest.artifact, vocab_size(p.folder, p.manifest)
    rows = []
    for batch, length in p.shapes:
        feeds = make_feeds(sess.inputs, batch, length, vocab)
        _progress(f"batch {batch} x length {length}: timing for ~{seconds:g} s")
        stats = time_forward(sess, feeds, seconds)
        flops, why = count_at(path, feeds)
        rows.append({"kind": "forward", "batch": batch, "length": length, "latency": stats.to_dict(),
                     **_compute_part(flops, why, stats, limits)})
    return rows


def _decoder_rows(p, decoder, limits, seconds: float, new_tokens: int) -> list:
    from edgeport.runtime.bench import count_at, decoder_feeds, time_decoder, vocab_size

    info, path = p.manifest.decoder, p.folder / p.manifest.artifact
    vocab = vocab_size(p.folder, p.manifest)
    weights = _weight_bytes(path)
    rows = []
    for batch, length in p.shapes:
        _progress(f"batch {batch} x prompt {length} + {new_tokens} new tokens: timing for ~{seconds:g} s")
        prefill, step = time_decoder(decoder, batch, length, new_tokens, vocab, seconds)
        feeds = decoder_feeds(info, batch, length, vocab) if path.suffix == ".onnx" else {}
        flops, why = count_at(path, feeds)
        kv = _kv_bytes(info, batch, length + new_tokens / 2)
        rows.append({"kind": "decoder", "batch": batch, "length": length, "new_tokens": new_tokens,
                     "prefill": {"latency": prefill.to_dict(), **_compute_part(flops, why, prefill, limits)},
                     "decode": _decode_part(weights, kv, step, batch, limits)})
    return rows


def _compute_part(flops, why: str, stats, limits) -> dict:
    """flops, achieved GFLOP/s (complete counts only), fraction of the compute limits (or why there is none)
    for one timed shape (a forward pass, or a decoder's prefill)."""
    from edgeport.runtime.bench import compute_fraction

    fraction, against = compute_fraction(flops, stats.median_ms / 1e3, limits)
    return {"flops": flops.to_dict() if flops else None,
            "gflops_per_s": flops.total / stats.median_ms / 1e6 if flops and flops.complete else None,
            "fraction": fraction,
            "fraction_of": against if fraction is not None else None,
            "why_no_fraction": None if fraction is not None else (why or against)}


def _decode_part(weights: dict | None, kv: int, step, batch: int, limits) -> dict:
    """Decode-step figures: bytes read per step (weights + KV cache) over the time, against bandwidth."""
    why = ("weight bytes are counted for ONNX graphs only" if weights is None else
           "MoE: the expert weights a step reads depend on the routing" if weights["experts"] else None)
    read = weights["weights"] + kv if why is None else None
    bw = read / (step.median_ms / 1e3) / 1e9 if read is not None else None
    return {"latency_per_step": step.to_dict(), "tokens_per_s": batch * 1e3 / step.median_ms,
            "weight_bytes": weights["weights"] if weights else None, "kv_cache_bytes": kv, "bytes_per_step": read,
            "gb_per_s": bw, "fraction": bw / limits.memory_read_gbps if bw is not None else None,
            "fraction_of": "memory read bandwidth" if bw is not None else None, "why_no_fraction": why}


def _weight_bytes(path) -> dict | None:
    if Path(path).suffix != ".onnx":
        return None
    from edgeport.runtime.flops import weight_bytes

    return weight_bytes(path)


def _kv_bytes(info: dict, batch: int, context: float) -> int:
    """float32 keys + values a decode step reads at `context` past tokens (capped by a sliding window)."""
    ctx = min(context, info.get("sliding_window") or context)
    return int(2 * info["layers"] * batch * info["kv_heads"] * ctx * info["head_dim"] * 4)


def run_bench(a) -> dict:
    """Do the whole `edgeport bench` run for parsed args; returns the JSON-ready report."""
    from edgeport.runtime.bench import parse_ints, plan
    from edgeport.runtime.machine import machine_facts
    from edgeport.runtime.session import default_threads

    lengths = parse_ints(a.lengths, "--lengths") if a.lengths is not None else None
    batches = parse_ints(a.batch, "--batch") if a.batch is not None else None
    check_seconds(a.seconds, "--seconds")
    p = plan(a.folder, lengths, batches, a.new_tokens)
    threads = a.threads if a.threads is not None else default_threads()
    if threads < 1:
        raise EdgeportError(f"--threads must be >= 1, got {threads}")
    if a.json:
        _check_json_out(Path(a.json))
    runner = _open(p, threads)  # before the limits: a folder that cannot load fails at once
    facts = machine_facts()
    limits, limits_source = _limits(a, threads, facts)
    if p.kind == "decoder":
        rows = _decoder_rows(p, runner, limits, a.seconds, a.new_tokens)
    else:
        rows = _forward_rows(p, runner, limits, a.seconds)
    m = p.manifest
    return {"schema": SCHEMA, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "export": {"folder": str(p.folder), "artifact": m.artifact, "family": m.family, "task": m.task,
                       "target": m.target, "precision": m.precision, "quantization": m.quantization,
                       "kind": p.kind, "static_shapes": p.static},
            "threads": threads, "machine": asdict(facts), "machine_after": {"load_average": _load()},
            "limits": limits.to_dict(), "limits_source": limits_source, "notes": p.notes, "results": rows}


def _load() -> list:
    import os

    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def _cmd_bench(a):
    report = run_bench(a)
    print_report(report)
    if a.json:
        out = Path(a.json)
        try:
            out.write_text(json.dumps(report, indent=1) + "\n")
        except OSError as e:
            raise EdgeportError(f"--json {out}: cannot write it ({e.strerror})") from None
        _progress(f"wrote {out}")


def _pct(x) -> str:
    """A fraction as a percentage; over 100% marked "*" (see OVER_LIMIT)."""
    if x is None:
        return "    -"
    return f"{100 * x:5.1f}%" + ("*" if x > 1 else "")


OVER_LIMIT = ("* above 100%: faster than the limits allow, so the limits were measured under other load "
              "(or on another machine): rerun them (--precise-limits) on an idle machine")


def _header(r: dict) -> list:
    e, mach, lim = r["export"], r["machine"], r["limits"]
    load = " ".join(map(str, mach["load_average"]))
    after = " ".join(map(str, r["machine_after"]["load_average"]))
    flags = " ".join(mach["flags"]) or "flags unknown"
    where = (" -- timed as its ONNX graph on onnxruntime's CPU provider, not as a TensorRT engine"
             if e["target"] == "tensorrt" else "")
    lines = [(f"{e['folder']}: {e['family']} {e['task']}, {e['target']} {e['precision']} ({e['artifact']}), "
              f"{r['threads']} threads{where}")]
    lines.append(f"machine: {mach['cpu_model']}; {flags}; {mach['usable_cpus']} CPUs; {mach['ram_gib']} GiB; "
                 f"load {load} (after: {after})")
    lines.append("libraries: " + ", ".join(f"{k} {v}" for k, v in mach["libraries"].items() if v))
    lines.append(f"limits ({r['limits_source']}): fp32 MatMul {lim['fp32_gflops']:.1f} GFLOP/s, int8 "
                 f"MatMulInteger {lim['int8_gops']:.1f} GOP/s, memory read {lim['memory_read_gbps']:.1f} GB/s "
                 f"(copy {lim['memory_copy_gbps']:.1f} GB/s)")
    return lines + [f"note: {n}" for n in r["notes"]]


def _decoder_lines(results: list, missing: dict) -> list:
    lines = [(f"{'batch':>5} {'prompt':>6} {'prefill ms':>10} {'p90':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'of limit':>8} "
              f"{'decode ms/step':>14} {'p90':>8} {'tokens/s':>9} {'MB/step':>8} {'GB/s':>6} {'of bw':>6}")]
    for x in results:
        pf, dc = x["prefill"], x["decode"]
        gf = pf["flops"]["total"] / 1e9 if pf["flops"] else None
        mb = dc["bytes_per_step"] / 1e6 if dc["bytes_per_step"] is not None else None
        step = dc["latency_per_step"]
        lines.append(f"{x['batch']:5d} {x['length']:6d} {pf['latency']['median_ms']:10.2f} "
                     f"{pf['latency']['p90_ms']:8.2f} {_num(gf, 8, 2)} {_num(pf['gflops_per_s'], 8, 1)} "
                     f"{_pct(pf['fraction']):>8} "
                     f"{step['median_ms']:14.2f} {step['p90_ms']:8.2f} {dc['tokens_per_s']:9.1f} "
                     f"{_num(mb, 8, 1)} {_num(dc['gb_per_s'], 6, 1)} {_pct(dc['fraction']):>6}")
        for part in (pf, dc):
            if part["why_no_fraction"]:
                missing.setdefault(part["why_no_fraction"], []).append(f"{x['batch']}x{x['length']}")
    return lines


def _forward_lines(results: list, missing: dict) -> list:
    lines = [(f"{'batch':>5} {'length':>6} {'median ms':>10} {'p90 ms':>8} {'calls':>6} {'GFLOP':>8} "
              f"{'GFLOP/s':>8} {'of limit':>8}  against")]
    for x in results:
        lat = x["latency"]
        gf = x["flops"]["total"] / 1e9 if x["flops"] and x["flops"]["complete"] else None
        lines.append(f"{x['batch']:5d} {x['length']:6d} {lat['median_ms']:10.2f} {lat['p90_ms']:8.2f} "
                     f"{lat['n']:6d} {_num(gf, 8, 3)} {_num(x['gflops_per_s'], 8, 1)} "
                     f"{_pct(x['fraction']):>8}  {x['fraction_of'] or '-'}")
        if x["why_no_fraction"]:
            missing.setdefault(x["why_no_fraction"], []).append(f"{x['batch']}x{x['length']}")
    return lines


def print_report(r: dict, out=None):
    """The report as a readable table: export, machine, limits, one row per shape, then the reason for
    every missing fraction."""
    missing: dict = {}
    rows = (_decoder_lines if r["export"]["kind"] == "decoder" else _forward_lines)(r["results"], missing)
    lines = _header(r) + rows + [f"no fraction ({', '.join(v)}): {why}" for why, v in missing.items()]
    if any("%*" in row for row in rows[1:]):
        lines.append(OVER_LIMIT)
    print("\n".join(lines), file=out or sys.stdout, flush=True)


def _num(x, width: int, digits: int) -> str:
    return f"{x:{width}.{digits}f}" if x is not None else f"{'-':>{width}}"


def register(subparsers):
    """Add `edgeport bench` to the CLI's subparsers."""
    b = subparsers.add_parser("bench", help="latency of one export on this machine, against the machine's measured "
                              "fp32/int8 MatMul and memory-bandwidth limits")
    b.add_argument("folder", help="export folder (with edgeport.json)")
    b.add_argument("--lengths", help="sequence (prompt) lengths, comma-separated (default 32,128,512 within what "
                   "the export allows; a static export: its fixed length)")
    b.add_argument("--batch", help="batch sizes, comma-separated (default 1,8; decoders 1)")
    b.add_argument("--threads", type=int, help="intra-op threads for the export and the limits (default: all cores)")
    b.add_argument("--seconds", type=float, default=2.0, help="timing budget per shape, s (default 2; at least "
                   "5 calls, or 3 rounds for decoders)")
    b.add_argument("--new-tokens", type=int, default=32, help="decoders: timed decode steps per round (default 32)")
    b.add_argument("--precise-limits", action="store_true", help="measure the limits over more sizes and longer "
                   "(about a minute instead of about 10 s)")
    b.add_argument("--limits-from", metavar="JSON", help="reuse the limits of an earlier `bench --json` file "
                   "(same threads) instead of measuring them")
    b.add_argument("--json", metavar="OUT", help="write everything (machine, limits, results) to this file")
    b.set_defaults(fn=_cmd_bench)
