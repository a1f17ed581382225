"""torch.onnx's two exporters side by side on every family and lowering: TorchScript (dynamo=False, what
edgeport uses) and torch.export (dynamo=True, torch's default since 2.9).

    python benchmarks/compare_onnx_exporters.py                      # tiny presets: parity, size, nodes
    python benchmarks/compare_onnx_exporters.py --only bert-tiny     # some presets only
    python benchmarks/compare_onnx_exporters.py --latency bert:text-classification:generic \
        deberta-v3-base:text-classification:fast       # base sizes: batch 1, length 128, own processes

For each case the same (lowered) model goes through both exporters with the contract's names and dynamic
axes; each graph is checked against the reference over export's shape grid (validate.check, the same
tolerance as `edgeport export`), and its size, node count and custom-op nodes are recorded. Lowering graph
passes (BERT fusions, MultiHeadAttention inputs) are applied to both. A case the dynamo exporter cannot
convert is reported with the first line of its error. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = [  # (preset, task, lowering or None for the plain route)
    ("bert-tiny", "text-classification", "generic"), ("bert-tiny", "text-classification", "default"),
    ("megatron-bert-tiny", "question-answering", "generic"), ("mobilebert-tiny", "fill-mask", None),
    ("convbert-tiny", "fill-mask", None), ("mega-tiny", "token-classification", None),
    ("deberta-tiny", "fill-mask", "generic"), ("deberta-v2-tiny", "text-classification", "generic"),
    ("deberta-v2-tiny", "text-classification", "fast"), ("deberta-v2-tiny", "text-classification", "plain"),
    ("deberta-v2-tiny", "text-classification", "mha"), ("deberta-v2-tiny", "multiple-choice", "fast"),
    ("gpt2-tiny", "text-generation", "generic"), ("mistral-tiny", "text-generation", "generic"),
    ("mistral-tiny", "text-generation", "default"), ("mixtral-tiny", "text-generation", "default"),
]
TRT_CASES = [("deberta-v2-tiny", "question-answering", "default")]  # target tensorrt


def export_both(ref, contract, lowering, target: str, folder: Path) -> dict:
    """-> {"torchscript": path | error, "dynamo": path | error} for the lowered model."""
    import torch

    from edgeport.export.onnx import export_onnx
    from edgeport.ops.registry import LoweringContext

    ctx = LoweringContext(ref.config, None)
    out = {}
    for name in ("torchscript", "dynamo"):
        d = folder / name
        d.mkdir()
        cm = lowering.applied(ref.model, ctx) if lowering else nullcontext((ref.model, {}))
        try:
            with cm as (model, _):
                if name == "torchscript":
                    export_onnx(model, contract, d, 17, lowering.symbolics if lowering else (),
                                lowering.custom_opsets if lowering else None)
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        torch.onnx.export(model, contract.sample_args(), str(d / "model.onnx"),
                                          input_names=contract.input_names, output_names=contract.output_names,
                                          dynamic_axes=contract.dynamic_axes(), opset_version=18, dynamo=True,
                                          external_data=False, verbose=False)
            for graph_pass in lowering.graph_passes if lowering else ():
                graph_pass(d / "model.onnx", ctx)
            out[name] = d / "model.onnx"
        except Exception as e:  # an exporter's failure is a result here, recorded as such
            out[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
    return out


def judge(ref, contract, path, lowering) -> dict:
    """Parity over export's grid, size, nodes and custom ops of one graph."""
    import onnx

    from edgeport.export import validate
    from edgeport.export.onnx import custom_ops

    proto = onnx.load(str(path))
    row = {"size_kb": path.stat().st_size / 1024, "nodes": len(proto.graph.node),
           "custom": ",".join(sorted(f"{c['op_type']}x{c['count']}" for c in custom_ops(path))) or "-"}
    try:
        if contract.kind == "decoder":
            from edgeport.export import decoders

            info = {"layers": contract.layers, "kv_heads": contract.kv_heads, "head_dim": contract.head_dim,
                    "static_cache": None}
            checks = decoders.validate(ref, path, contract, info, None)
        else:
            session = validate.validation_session(path, lowering.validation if lowering else None, threads=1)
            checks = validate.check(ref.model, session, contract, validate.grid_for(contract, None))
        row["max_diff"] = f"{max(c.max_abs_diff for c in checks):.1e}"
    except Exception as e:
        row["max_diff"] = f"FAIL ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    return row


def run_case(preset, task, lowering_name, target="onnx") -> list:
    from edgeport.export.contracts import contract_for
    from edgeport.ops.registry import find_lowering
    from edgeport.reference_models import load_reference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(preset, task)
    contract = contract_for(ref)
    lowering = find_lowering(ref.family.name, target, lowering_name) if lowering_name else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_both(ref, contract, lowering, target, Path(tmp))
        for exporter, p in paths.items():
            r = judge(ref, contract, p, lowering) if isinstance(p, Path) else {"max_diff": f"export fails: {p}"}
            rows.append({"case": f"{preset} {task} {target}/{lowering_name or 'plain'}", "exporter": exporter, **r})
    return rows


def table(rows: list) -> str:
    head = "| case | exporter | max abs diff (export's grid) | size KiB | nodes | custom-op nodes |\n|---|---|---|---|---|---|\n"
    return head + "\n".join(f"| {r['case']} | {r['exporter']} | {r['max_diff']} | {r.get('size_kb', 0):.0f} | "
                            f"{r.get('nodes', '-')} | {r.get('custom', '-')} |" for r in rows)


def latency(spec: str, rounds: int, calls: int) -> None:
    """PRESET:TASK:LOWERING -> both exporters' graphs timed in onnxruntime (benchmarks/common.measure:
    each in its own process, interleaved rounds, medians), batch 1, length 128, after a parity check."""
    import functools

    import numpy as np

    from common import make_raw_ort, measure, report
    from edgeport.export.contracts import contract_for
    from edgeport.ops.registry import find_lowering
    from edgeport.reference_models import load_reference

    preset, task, low = spec.split(":")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(preset, task)
    contract = contract_for(ref)
    lowering = find_lowering(ref.family.name, "onnx", low) if low != "plain" else None
    work = Path(tempfile.mkdtemp(prefix="exporters-"))
    paths = export_both(ref, contract, lowering, "onnx", work)
    rows = [{"case": spec, "exporter": k, **(judge(ref, contract, p, lowering) if isinstance(p, Path) else
                                            {"max_diff": f"export fails: {p}"})} for k, p in paths.items()]
    print(table(rows), flush=True)
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(5, contract.vocab_size, (1, 128)), "attention_mask": np.ones((1, 128), np.int64),
             "token_type_ids": np.zeros((1, 128), np.int64)}
    contenders = {f"{k} ({spec})": functools.partial(make_raw_ort, str(p), feeds)
                  for k, p in paths.items() if isinstance(p, Path)}
    report(f"{spec}: onnxruntime latency, batch 1, length 128", measure(contenders, rounds, calls),
           next(iter(contenders)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="presets to run (default: all cases)")
    ap.add_argument("--latency", nargs="*", metavar="PRESET:TASK:LOWERING", help="time these instead")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=10)
    a = ap.parse_args(argv)
    import torch

    if a.latency:
        for spec in a.latency:
            latency(spec, a.rounds, a.calls)
        return
    torch.set_num_threads(1)
    rows = []
    for preset, task, low, target in [c + ("onnx",) for c in CASES] + [c + ("tensorrt",) for c in TRT_CASES]:
        if not a.only or preset in a.only:
            rows += run_case(preset, task, low, target)
    print(table(rows))


if __name__ == "__main__":
    main()
