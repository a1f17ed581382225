"""Render benchmarks/REPORT.md and its PNG plots from the results JSON that benchmarks/report.py collects.

    from report_render import render
    render(results: dict, out_md: Path)   # writes out_md and out_md.parent / "report-png" / *.png

No timing happens here: everything comes from `results` (schema below), so tests can render a tiny
synthetic results dict (tests/test_report.py).

Results schema (every list may be empty; times in ms, sizes in MiB, memory in MiB, rates per second):
    machine:  {cpu, flags: [str], cores, threads, versions: {pkg: ver}, limits: {fp32_gflops, int8_gops,
               bandwidth_gbs}}
    stages:   [{name, loadavg_before, loadavg_after, wall_s, prep_and_wait_s}]
    latency:  [{model, contender, backend, precision, seq, batch, median_ms, p90_ms, edgeport: bool, default: bool}]
    flops:    {model: MatMul FLOPs of one batch-1 call at length 128}
    exports:  [{model, contender, precision, export_s, peak_rss_mib, size_mib}]
    accuracy: [{model, contender, scheme, metrics: {name: value}}]
    decode:   [{model, contender, precision, ms_per_token, prefill_ms, weights_bytes?, kv_bytes?}]
              (weights_bytes + kv_bytes: bytes one decode step reads, report_decoders.decode_bytes; with the
              machine's bandwidth_gbs they give the bandwidth floor, decode_floor)
    profiles: [{model, contender, precision, seq, ops: {op_type: ms per call}, call?: str}]
              (call: what one profiled call is, e.g. "decode step after 160 cached positions"; default
              "call @SEQ" = one batch-1 x seq encoder call)
    notes:    [str]   (said as they are, in the "Notes" section)
Goals (goal_rows) are derived from these, never stored: a row is met when its measured ratio is on the
right side of its target (issue 15's numbers).
"""

from __future__ import annotations

import math
from pathlib import Path

PNG_DIR = "report-png"  # beside REPORT.md; another report file gets its own folder (png_dir_name)


def png_dir_name(out_md: Path) -> str:
    """The plots' folder name beside out_md: "report-png" for REPORT.md, "<stem>-png" (lower case) for any
    other name, so a --quick run (REPORT-quick.md) never overwrites the full report's plots."""
    stem = Path(out_md).stem.lower()
    return PNG_DIR if stem == "report" else f"{stem}-png"
GOAL_SEQ = 128


def _lat(results, model, precision, seq=GOAL_SEQ, batch=1, **want):
    """Latency rows of `model` at (seq, batch, precision) matching every key=value in `want`."""
    return [r for r in results.get("latency", []) if r["model"] == model and r["precision"] == precision
            and r["seq"] == seq and r["batch"] == batch and all(r.get(k) == v for k, v in want.items())]


def _best_peer(rows, backend=None):
    """The fastest non-edgeport row on a deployment backend (`backend` when given; PyTorch is no peer here)."""
    peers = [r for r in rows if not r.get("edgeport") and r.get("backend") != "torch"
             and (backend is None or r.get("backend") == backend)]
    return min(peers, key=lambda r: r["median_ms"]) if peers else None


def goal_rows(results: dict) -> list[dict]:
    """Issue 15's goals as rows {goal, model, measured, ratio, target, op, met}; ratio None = not measured;
    comparisons with a peer also carry gap_ms (edgeport's ms minus the peer's, per call or token).

    op "<=": met when ratio <= target; ">=": met when ratio >= target."""
    rows = []
    models = sorted({r["model"] for r in results.get("latency", [])})
    for model in models:  # 1. no default slower than the best peer on the same backend
        for prec, backend in [(p, b) for p in ("fp32", "int8") for b in ("onnxruntime", "LiteRT")]:
            default = _lat(results, model, prec, edgeport=True, default=True, backend=backend)
            peer = _best_peer(_lat(results, model, prec), backend)
            if not default or peer is None:
                continue
            d = min(default, key=lambda r: r["median_ms"])
            rows.append(_row(f"default not slower than the best peer ({backend})", model, prec,
                             f"{d['contender']} {d['median_ms']:.1f} ms vs {peer['contender']} {peer['median_ms']:.1f} ms "
                             f"@{GOAL_SEQ}", d["median_ms"] / peer["median_ms"], 1.0, "<=") | {"gap_ms": d["median_ms"] - peer["median_ms"]})
    for model in [m for m in models if "deberta" in m.lower()]:  # 2. DeBERTa <= 0.75x Optimum
        d = _lat(results, model, "fp32", edgeport=True, default=True, backend="onnxruntime")
        o = [r for r in _lat(results, model, "fp32") if "optimum" in r["contender"].lower()]
        if d and o:
            rows.append(_row("DeBERTa-v3-base @128 <= 0.75x Optimum", model, "fp32",
                             f"{d[0]['median_ms']:.1f} vs {o[0]['median_ms']:.1f} ms", d[0]["median_ms"] / o[0]["median_ms"],
                             0.75, "<="))
    rows += _limit_rows(results)
    rows += _decode_rows(results)
    return rows


def _limit_rows(results) -> list[dict]:
    """3. encoders' achieved fraction of this machine's MatMul limit (fp32 >= 90%, int8 >= 75%), against the
    limits measured in the goal models' own step (goal_limits) where there are some. A fraction above 100%
    means the limit was measured under heavier load than the model: such a row is not judged (met None)."""
    limits = results.get("goal_limits") or results.get("machine", {}).get("limits", {})
    rows = []
    for model, flops in sorted(results.get("flops", {}).items()):
        for prec, key, target in (("fp32", "fp32_gflops", 0.90), ("int8", "int8_gops", 0.75)):
            d = _lat(results, model, prec, edgeport=True, default=True, backend="onnxruntime")
            if not d or not limits.get(key):
                continue
            rate = flops / (d[0]["median_ms"] * 1e-3) / 1e9
            rows.append(_row(f"{prec} >= {target:.0%} of the measured {prec} MatMul limit", model, prec,
                             f"{flops / 1e9:.2f} G MatMul ops in {d[0]['median_ms']:.1f} ms = {rate:.0f} of "
                             f"{limits[key]:.0f} G/s", rate / limits[key], target, ">="))
    return rows


def _decode_rows(results) -> list[dict]:
    """4. decoders: edgeport tokens/s >= 1.2x onnxruntime-genai's, per precision."""
    rows = []
    dec = results.get("decode", [])
    for model in sorted({r["model"] for r in dec}):
        for prec in sorted({r["precision"] for r in dec if r["model"] == model}):
            ours = [r for r in dec if r["model"] == model and r["precision"] == prec and "edgeport" in r["contender"]]
            peer = [r for r in dec if r["model"] == model and r["precision"] == prec and "genai" in r["contender"].lower()]
            if ours and peer:
                o, p = min(ours, key=lambda r: r["ms_per_token"]), peer[0]
                rows.append(_row("decode tokens/s >= 1.2x onnxruntime-genai", model, prec,
                                 f"{o['contender']} {o['ms_per_token']:.1f} vs {p['contender']} {p['ms_per_token']:.1f} "
                                 "ms/token", p["ms_per_token"] / o["ms_per_token"], 1.2, ">=")
                            | {"gap_ms": o["ms_per_token"] - p["ms_per_token"]})
    return rows


def _row(goal, model, prec, measured, ratio, target, op):
    met = ratio is not None and (ratio <= target if op == "<=" else ratio >= target)
    if op == ">=" and target < 1 and ratio is not None and ratio > 1.0:  # a fraction of a limit above 100%
        met = None
    return {"goal": goal, "model": model, "precision": prec, "measured": measured, "ratio": ratio,
            "target": target, "op": op, "met": met}


RESULT = {True: "met", False: "**missed**", None: "not judged (limit measured under heavier load)"}


def goals_table(rows) -> list[str]:
    """Markdown lines: one row per goal, `met` / `**missed**` with the measured ratio."""
    out = ["| goal | model | precision | measured | ratio | target | result |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}x" if r["op"] == "<=" or r["target"] > 1 \
            else f"{r['ratio']:.0%}"
        target = f"{r['op']} {r['target']:.2f}x" if r["op"] == "<=" or r["target"] > 1 else f"{r['op']} {r['target']:.0%}"
        out.append(f"| {r['goal']} | {r['model']} | {r['precision']} | {r['measured']} | {ratio} | {target} | "
                   f"{RESULT[r['met']]} |")
    return out


def latency_table(results) -> list[str]:
    """Markdown: every latency row, grouped by model / batch / length, with the ratio to the best peer."""
    out = ["| model | batch x length | contender | backend | precision | median ms | p90 ms | x best peer, same backend |",
           "|---|---|---|---|---|---|---|---|"]
    rows = sorted(results.get("latency", []), key=lambda r: (r["model"], r["batch"], r["seq"], r["precision"],
                                                             r["median_ms"]))
    for r in rows:
        peer = _best_peer(_lat(results, r["model"], r["precision"], r["seq"], r["batch"]), r["backend"])
        ratio = f"{r['median_ms'] / peer['median_ms']:.2f}x" if peer else "—"
        name = f"**{r['contender']}**" if r.get("edgeport") else r["contender"]
        out.append(f"| {r['model']} | {r['batch']} x {r['seq']} | {name} | {r['backend']} | {r['precision']} | "
                   f"{r['median_ms']:.2f} | {r['p90_ms']:.2f} | {ratio} |")
    return out


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def simple_table(rows, cols) -> list[str]:
    """Markdown table of dict rows over `cols` (missing -> —)."""
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "—")) for c in cols) + " |")
    return out


def _profile_groups(results) -> dict:
    """(model, precision, seq) -> that shape's profile rows, in results order."""
    groups = {}
    for p in results.get("profiles", []):
        groups.setdefault((p["model"], p["precision"], p["seq"]), []).append(p)
    return groups


def profile_title(p) -> str:
    """The heading words of a profile row's table: "MODEL PRECISION, ms per CALL"."""
    return f"{p['model']} {p['precision']}, ms per {p.get('call') or 'call @' + str(p['seq'])}"


def profile_tables(results, top: int = 8) -> list[str]:
    """Per-op time (ms per call, onnxruntime profiling) of each profiled contender, top ops by time."""
    out = []
    for profs in _profile_groups(results).values():
        ops = sorted({op for p in profs for op in p["ops"]}, key=lambda op: -max(p["ops"].get(op, 0) for p in profs))
        out += [f"\n{profile_title(profs[0])} by op type (onnxruntime profiler, node times summed):\n",
                "| op type | " + " | ".join(p["contender"] for p in profs) + " |", "|---|" + "---|" * len(profs)]
        for op in ops[:top]:
            out.append(f"| {op} | " + " | ".join(f"{p['ops'].get(op, 0):.2f}" for p in profs) + " |")
        out.append("| all ops | " + " | ".join(f"{sum(p['ops'].values()):.2f}" for p in profs) + " |")
        out += profile_diff(profs)
    return out


def _ours_and_peer(profs):
    """(edgeport's profile, the first peer's) of one group, either None when absent."""
    return (next((p for p in profs if "edgeport" in p["contender"]), None),
            next((p for p in profs if "edgeport" not in p["contender"]), None))


def op_deltas(ours, peer) -> tuple[float, list]:
    """(all ops ours - peer in ms, [(ms ours - peer, op type)] largest first) of two profile rows."""
    ops = set(ours["ops"]) | set(peer["ops"])
    d = sorted(((ours["ops"].get(o, 0.0) - peer["ops"].get(o, 0.0), o) for o in ops), reverse=True)
    return sum(ours["ops"].values()) - sum(peer["ops"].values()), d


def profile_diff(profs, top: int = 4) -> list[str]:
    """One sentence: where edgeport's profile spends more / less than the peer's (first non-edgeport)."""
    ours, peer = _ours_and_peer(profs)
    if ours is None or peer is None:
        return []
    total, d = op_deltas(ours, peer)
    more = ", ".join(f"{o} +{x:.2f}" for x, o in d[:top] if x > 0) or "nothing"
    less = ", ".join(f"{o} {x:.2f}" for x, o in d[::-1][:top] if x < 0) or "nothing"
    return ["", f"{ours['contender']} minus {peer['contender']}: {total:+.2f} ms per call in all; more time in "
                f"{more}; less in {less} (ms per call)."]


def decode_floor(results, row) -> dict | None:
    """{mb: MB (1e6 bytes) one decode step reads, floor_ms: mb / the machine's bandwidth_gbs, x_floor:
    ms_per_token / floor_ms} of a decode row, or None without bytes or a measured bandwidth."""
    bw = results.get("machine", {}).get("limits", {}).get("bandwidth_gbs")
    if not bw or "weights_bytes" not in row:
        return None
    mb = (row["weights_bytes"] + row.get("kv_bytes", 0)) / 1e6
    return {"mb": mb, "floor_ms": mb / bw, "x_floor": row["ms_per_token"] / (mb / bw)}


def decode_table(results) -> list[str]:
    """Markdown: the decode rows with tokens/s, the MB each step reads and its bandwidth floor."""
    rows = []
    for r in results.get("decode", []):
        f = decode_floor(results, r) or {}
        rows.append({**r, "tokens_per_s": 1e3 / r["ms_per_token"], "MB_per_token": f.get("mb", "—"),
                     "floor_ms": f.get("floor_ms", "—"), "x_floor": f.get("x_floor", "—")})
    out = simple_table(rows, ["model", "contender", "precision", "prefill_ms", "ms_per_token", "tokens_per_s",
                              "MB_per_token", "floor_ms", "x_floor"])
    if any(r["floor_ms"] != "—" for r in rows):
        bw = results["machine"]["limits"]["bandwidth_gbs"]
        out += ["", f"MB_per_token: bytes one decode step reads (weights, the embedding one row, plus the KV cache "
                    f"at the profiled length; report_decoders.decode_bytes); floor_ms: those bytes at the measured "
                    f"{bw:.1f} GB/s memory bandwidth, the least time any graph needs to read them once; x_floor: "
                    "ms_per_token / floor_ms."]
    return out


def _profile_of(results, model, prec):
    """(ours, peer) profile rows of the first profiled shape of (model, precision), or (None, None)."""
    for (m, p, _), profs in _profile_groups(results).items():
        if (m, p) == (model, prec):
            return _ours_and_peer(profs)
    return None, None


def profile_why(ours, peer, gap_ms=None, top: int = 3) -> str:
    """Where edgeport's profile spends more than the peer's, as words: the total difference, the timed gap
    beside it (gap_ms, when given), and the `top` ops with the most extra time (marked when the peer's profile
    has none of that op); when edgeport's ops take no more, says the profile does not show the gap."""
    total, d = op_deltas(ours, peer)
    gap = f" (timed gap {gap_ms:+.2f} ms)" if gap_ms is not None else ""
    head = f"in the profiled {ours.get('call') or 'call'}, edgeport's ops take {total:+.2f} ms vs {peer['contender']}'s{gap}"
    if total <= 0:
        return head + ": the per-op profile does not show the gap (outside the kernels, or run-to-run spread)"
    items = [f"{o} {x:+.2f}" + (f" (none in {peer['contender']}'s)" if o not in peer["ops"] else "")
             for x, o in d[:top] if x > 0]
    return head + ", most in " + ", ".join(items)


def missed_why(results, r) -> str:
    """A sentence (may be empty) of why a missed goal row was missed, from the numbers: for a decode row the
    bandwidth floor against the speed the goal needs, then (when the floor allows it) profile_why; for
    "default not slower than the best peer" profile_why. Other rows (DeBERTa's 0.75x, the MatMul-limit
    fractions) get none: their profile tables show where the time goes. A "default" row also gets the ratio's
    range at the other shapes measured (other_shapes)."""
    ours, peer = _profile_of(results, r["model"], r["precision"])
    prof = profile_why(ours, peer, r.get("gap_ms")) if ours and peer else ""
    if r["goal"].startswith("decode"):
        dec = [x for x in results.get("decode", []) if x["model"] == r["model"] and x["precision"] == r["precision"]]
        o = min((x for x in dec if "edgeport" in x["contender"]), key=lambda x: x["ms_per_token"], default=None)
        p = next((x for x in dec if "genai" in x["contender"].lower()), None)
        fo, fp = (decode_floor(results, o) if o else None), (decode_floor(results, p) if p else None)
        if fo and fp:
            need = p["ms_per_token"] / r["target"]
            s = (f"edgeport reads {fo['mb']:.0f} MB per token (floor {fo['floor_ms']:.1f} ms) and runs at "
                 f"{fo['x_floor']:.2f}x its floor, GenAI {fp['mb']:.0f} MB at {fp['x_floor']:.2f}x; "
                 f"{r['target']:.1f}x GenAI's tokens/s needs {need:.1f} ms per token")
            if need < fo["floor_ms"]:
                return s + ", below edgeport's floor: out of reach while every weight is read once per token"
            s += f" = {need / fo['floor_ms']:.2f}x edgeport's floor"
            return s + (f"; {prof}" if prof else "")
    if r["goal"].startswith("default"):  # slower than the peer: where its profile spends more, other shapes
        return "; ".join(x for x in (prof, other_shapes(results, r)) if x)
    return ""


def other_shapes(results, r) -> str:
    """For a "default not slower than the best peer (BACKEND)" row: the range of the same ratio at the other
    measured (batch, length) shapes, as words ("" when none was measured)."""
    backend = r["goal"].rsplit("(", 1)[-1].rstrip(")")
    ratios = []
    for seq, batch in sorted({(x["seq"], x["batch"]) for x in results.get("latency", []) if x["model"] == r["model"]}):
        if (seq, batch) == (GOAL_SEQ, 1):
            continue
        d = _lat(results, r["model"], r["precision"], seq, batch, edgeport=True, default=True, backend=backend)
        peer = _best_peer(_lat(results, r["model"], r["precision"], seq, batch), backend)
        if d and peer:
            ratios.append(min(x["median_ms"] for x in d) / peer["median_ms"])
    return (f"at the {len(ratios)} other shapes measured edgeport is {min(ratios):.2f}-{max(ratios):.2f}x the best "
            "peer") if ratios else ""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows, xkey):
    """(contender, precision) -> sorted [(x, median_ms)]."""
    s = {}
    for r in rows:
        s.setdefault((r["contender"], r["precision"]), []).append((r[xkey], r["median_ms"]))
    return {k: sorted(v) for k, v in s.items()}


def plot_latency(results, xkey: str, fixed: dict, path: Path) -> bool:
    """One panel per model: latency vs `xkey` ("seq" or "batch") at `fixed` (e.g. {"batch": 1}), one line per
    contender and precision (edgeport solid, peers dashed). False (no file) when no model has 2+ points."""
    rows = [r for r in results.get("latency", []) if all(r[k] == v for k, v in fixed.items())]
    models = [m for m in sorted({r["model"] for r in rows}) if len({r[xkey] for r in rows if r["model"] == m}) > 1]
    if not models:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        ours = {(r["contender"], r["precision"]) for r in mine if r.get("edgeport")}
        for (name, prec), pts in _series(mine, xkey).items():
            if len(pts) < 2:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "-o" if (name, prec) in ours else "--x", label=f"{name} {prec}", markersize=4, linewidth=1.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        xs_all = sorted({r[xkey] for r in mine})
        ax.set_xticks(xs_all, [str(x) for x in xs_all])
        ax.set_xlabel("sequence length" if xkey == "seq" else "batch")
        ax.set_ylabel("median ms per call")
        ax.set_title(f"{model} ({', '.join(f'{k} {v}' for k, v in fixed.items())})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


def plot_bars(rows, label_key, value_keys: dict, title: str, path: Path) -> bool:
    """Horizontal bars, one panel per value key ({key: axis label}); False when `rows` is empty."""
    if not rows:
        return False
    plt = _plt()
    labels = [label_key(r) for r in rows]
    width = 3.6 * len(value_keys) + 0.065 * max(len(lab) for lab in labels)  # room for the labels
    fig, axes = plt.subplots(1, len(value_keys), figsize=(width, 0.35 * len(rows) + 1.4), squeeze=False)
    for ax, (key, xlabel) in zip(axes[0], value_keys.items()):
        vals = [r.get(key) if isinstance(r.get(key), (int, float)) else math.nan for r in rows]
        ax.barh(range(len(rows)), vals, color=["tab:blue" if "edgeport" in lab else "tab:gray" for lab in labels])
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels if ax is axes[0][0] else [""] * len(rows), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


ACCURACY_KEYS = ("embedding_cosine_mean", "query_top1_agreement", "argmax_agreement", "span_argmax_agreement",
                 "perplexity_relative_delta", "greedy_next_token_agreement", "max_abs_diff")


def accuracy_rows(results) -> list[dict]:
    """One row per quantized artifact: the first known metric as `delta` (1 - agreement/cosine, or the
    relative perplexity change, or the max abs diff), named in `metric`."""
    out = []
    for a in results.get("accuracy", []):
        m = a.get("metrics", {})
        key = next((k for k in ACCURACY_KEYS if isinstance(m.get(k), (int, float))), None)
        if key is None:
            continue
        v = m[key]
        delta = v if ("delta" in key or "diff" in key) else 1.0 - v
        out.append({**a, "metric": key, "value": v, "delta": delta})
    return out


def plots(results, png_dir: Path) -> dict:
    """Write every plot that has data; name -> file name."""
    png_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    if plot_latency(results, "seq", {"batch": 1}, png_dir / "latency-vs-length.png"):
        made["latency vs sequence length (batch 1)"] = "latency-vs-length.png"
    if plot_latency(results, "batch", {"seq": GOAL_SEQ}, png_dir / "latency-vs-batch.png"):
        made[f"latency vs batch (length {GOAL_SEQ})"] = "latency-vs-batch.png"
    dec = [{**r, "tokens_per_s": 1e3 / r["ms_per_token"]} for r in results.get("decode", [])]
    if plot_bars(dec, lambda r: f"{r['contender']} {r['precision']}", {"tokens_per_s": "decode tokens/s",
                 "prefill_ms": "prefill ms"}, "decoders: batch 1, greedy", png_dir / "decode.png"):
        made["decode tokens/s"] = "decode.png"
    ex = results.get("exports", [])
    if plot_bars(ex, lambda r: f"{r['model']}: {r['contender']} {r['precision']}",
                 {"export_s": "export wall s", "peak_rss_mib": "peak RSS MiB", "size_mib": "artifact MiB"},
                 "export time, peak memory, file size", png_dir / "exports.png"):
        made["export time, peak memory, file size"] = "exports.png"
    acc = accuracy_rows(results)
    if plot_bars(acc, lambda r: f"{r['model']}: {r['contender']} {r['scheme']} ({r['metric']})",
                 {"delta": "delta vs fp32 (1 - agreement/cosine, or relative change)"},
                 "quantization accuracy deltas", png_dir / "accuracy.png"):
        made["quantization accuracy deltas"] = "accuracy.png"
    return made


IDLE_LOAD = 0.5  # 1-min load average before a timed step above which other work was sharing the cores


def idle_sentence(stages: list) -> str:
    """One line saying whether the machine was idle, from the 1-min load average recorded before each timed
    step (`stages[i]["loadavg_before"]`, "1min 5min 15min" as /proc/loadavg gives them): idle only when every
    step started at or below IDLE_LOAD; no stages recorded -> says so."""
    loads = []
    for st in stages:
        try:
            loads.append(float(str(st.get("loadavg_before", "")).split()[0]))
        except (IndexError, ValueError):
            pass
    if not loads:
        return "- No load average was recorded for these results."
    if max(loads) > IDLE_LOAD:
        return (f"- **The machine was not idle**: other work shared its cores during these runs (1-min load up to "
                f"{max(loads):.2f} before a timed step). Load average (1/5/15 min) at each stage:")
    return (f"- The machine was otherwise idle (1-min load at most {max(loads):.2f} before each timed step). "
            "Load average (1/5/15 min) at each stage:")


def render(results: dict, out_md: Path) -> Path:
    """Write out_md (markdown) and its plots under out_md.parent / png_dir_name(out_md); returns out_md."""
    out_md = Path(out_md)
    png_dir = png_dir_name(out_md)
    made = plots(results, out_md.parent / png_dir)
    m = results.get("machine", {})
    lim = m.get("limits", {})
    lines = ["# edgeport benchmark report", "",
             f"Generated by `{results.get('command', 'python benchmarks/report.py')}`"
             f"{' (quick mode: a smoke run, not for quoting)' if results.get('quick') else ''}. "
             "Each contender runs in its own process, interleaved rounds, medians "
             "(benchmarks/common.py); ratios come from one run on one machine.", "",
             "## Machine", "",
             f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('threads', '?')} threads used; flags: "
             f"{', '.join(m.get('flags', [])) or '?'}",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
             f"- Measured limits (onnxruntime MLAS): fp32 MatMul {lim.get('fp32_gflops', math.nan):.0f} GFLOP/s, "
             f"int8 MatMulInteger {lim.get('int8_gops', math.nan):.0f} GOP/s, memory bandwidth "
             f"{lim.get('bandwidth_gbs', math.nan):.1f} GB/s (streaming read of a 256 MiB weight; copy "
             f"{lim.get('copy_gbs', math.nan):.1f} GB/s read + write)",
             idle_sentence(results.get("stages", [])), ""]
    lines += simple_table(results.get("stages", []), ["name", "loadavg_before", "loadavg_after", "wall_s",
                                                      "prep_and_wait_s"])
    lines += ["", "wall_s: the timed step, holding the timing lock; prep_and_wait_s: untimed preparation before it "
                  "plus the wait for the lock (other helpers' measurements)."]
    gl = results.get("goal_limits")
    if gl:
        lines += ["", f"Limits measured again in the goal encoders' own locked step (load {gl.get('loadavg', '?')}): "
                      f"fp32 {gl['fp32_gflops']:.0f} GFLOP/s, int8 {gl['int8_gops']:.0f} GOP/s; the fractions "
                      "below divide by these."]
    rows = goal_rows(results)
    lines += ["", "## Goals (issue 15)", ""] + goals_table(rows)
    missed = [r for r in rows if r["met"] is False]
    if missed:
        titles = {(p["model"], p["precision"]): profile_title(p) for p in reversed(results.get("profiles", []))}
        lines += ["", "Missed, and where the explanation is:", ""]
        for r in missed:
            title = titles.get((r["model"], r["precision"])) if "TFLite" not in r["measured"] else None
            where = f'its onnxruntime per-op profile is under Profiles, "{title}"' if title else \
                "not profiled by this report (only ONNX graphs are: onnxruntime's profiler)"
            why = missed_why(results, r) if title or r["goal"].startswith("decode") else ""
            lines.append(f"- {r['goal']}, {r['model']} {r['precision']}: {r['measured']} ({r['ratio']:.2f}); {where}."
                         + (f" Why: {why}." if why else ""))
    lines += ["", "## Latency", ""] + latency_table(results)
    for title, png in made.items():
        lines += ["", f"![{title}]({png_dir}/{png})"]
    if results.get("decode"):
        lines += ["", "## Decoders", ""] + decode_table(results)
    lines += ["", "## Export time, peak memory, file size", ""] + simple_table(
        results.get("exports", []), ["model", "contender", "precision", "export_s", "peak_rss_mib", "size_mib"])
    lines += ["", "Each export ran in its own child process (wall seconds including Python start-up; peak RSS from "
                  "wait4). edgeport's export time includes its parity validation against the reference over the "
                  "shape grid, and its int8/int4 rows the accuracy evaluation on held-out text; Optimum's CLI also "
                  "validates its outputs; litert-torch's conversion, ai-edge-quantizer, quantize_dynamic and GenAI's "
                  "builder do not. Sizes: the artifact with its external data, MiB."]
    lines += ["", "## Quantization accuracy (against the float export)", ""] + simple_table(
        accuracy_rows(results), ["model", "contender", "scheme", "metric", "value", "delta"])
    if results.get("profiles"):
        lines += ["", "## Profiles (where edgeport is slower)", "",
                  "Times under the profiler (each node timed, plain sessions without I/O binding) run above the "
                  "timed medians and need not add up to them: compare the columns of one table with each other."]
        lines += profile_tables(results)
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    out_md.write_text("\n".join(lines) + "\n")
    return out_md
