"""`export --streaming --quantize int4`: int4 weights written straight from the memory-mapped checkpoint.

No fp32 ONNX exists at any point, on disk or in memory: the graph is traced without weights
(streaming.trace_graph), then each weight is read from the mapping, quantized in slices of at most
CHUNK_BYTES of fp32 and appended to the external data, and its mapped pages released:

    MatMul(A, W^T) with W (N, K) in the checkpoint
        -> MatMulNBits(A, W_Q4 (N, K/b, b/2) uint8, W_scales (N, K/b) [, W_zero_points])  com.microsoft
           attributes K, N, bits=4, block_size=b, accuracy_level (only when not 0)
    Gather(table (V, H), ids)
        -> GatherBlockQuantized(table_Q4 int4 (V, H), ids, table_scales (V, H/b) [, zero points])
           attributes gather_axis, quantize_axis=1, block_size=b
    MoE(x, router, fc1 (E, 2I, H), , fc2 (E, H, I))   experts stacked by streaming_fold, one expert at a time
        -> QMoE(x, router, fc1_q uint8 (E, 2I, H/2), fc1_scales (E, 2I, H/b), , fc2_q, fc2_scales)  com.microsoft
           attributes MoE's + expert_weight_bits=4, block_size=b (qmoe_packing.py, as `edgeport quantize`)

The packing is onnxruntime's own, the code `edgeport quantize --scheme int4` runs through
MatMulNBitsQuantizer (onnxruntime.quantization.matmul_nbits_quantizer.DefaultWeightOnlyQuantizer:
`qbits_block_quant` for MatMul weights, `quantize_ndarray` for Gather tables), called here one slice
at a time. Both quantize each column of B (each row of W) and each row of a table on its own, so slices
give the same bytes as the whole tensor. Names and attributes are the quantizer's too, so the artifact
equals quantizing the fp32 export with `edgeport quantize --scheme int4` under its default policy for
ONNX (nothing kept in float): tests/test_export_streaming_int4.py checks it bit for bit. Operator
contracts: onnxruntime docs/ContribOperators.md (MatMulNBits, GatherBlockQuantized).

Accuracy (the manifest's quantization.accuracy, the same fields as quantize/perplexity.py reports):
held-out perplexity and greedy agreement of the int4 artifact against the float reference, on a
budget of EVAL_TOKENS tokens, in two passes as streaming_validate does (artifact first, then the
reference on the mapped checkpoint releasing each module's pages).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from edgeport.export.streaming import append_tensor, release_pages

CHUNK_BYTES = 64 * 2**20  # fp32 bytes of one weight quantized at a time (bounds the quantizer's temporaries)
EVAL_TOKENS = 1024  # held-out tokens the accuracy report scores (8 windows of 128): seconds, not minutes
WINDOW = 128  # tokens per window, each run on an empty cache (as quantize/perplexity.py)
MS_DOMAIN = "com.microsoft"


def _quantizer(scheme):
    """onnxruntime's DefaultWeightOnlyQuantizer configured as onnx_backend.int4_weight_only configures
    MatMulNBitsQuantizer for `scheme` (QOperator format, 4 bits)."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 DefaultWeightOnlyQuantizer)

    cfg = DefaultWeightOnlyQuantConfig(block_size=scheme.block_size, is_symmetric=scheme.symmetric,
                                       accuracy_level=accuracy_level(scheme), quant_format=QuantFormat.QOperator,
                                       op_types_to_quantize=("MatMul", "Gather"), bits=4)
    return DefaultWeightOnlyQuantizer(cfg)


def accuracy_level(scheme) -> int:
    """MatMulNBits accuracy_level: 4 (int8 activations) for an -a8 scheme, else 0 (fp32 compute)."""
    return 4 if scheme.activations == "int8-dynamic" else 0


def _rows_per_chunk(row_bytes: int) -> int:
    return max(1, CHUNK_BYTES // max(row_bytes, 1))


def quantize_matmul_weight(w: torch.Tensor, transposed: bool, q, scratch=None) -> tuple:
    """B of a MatMul (B = w^T when `transposed`, else w; B is (K, N) float) -> (packed (N, K/b, b/2)
    uint8, scales (N, K/b) float32, zero points (N, ceil(K/b/2)) uint8), slice by slice over N. Each
    slice is made row-major fp32 in `scratch` (a pair of streaming.Scratch, reused across weights;
    default: new ones) for the quantizer, which reads B's columns: an fp32 w^T slice is read from the
    checkpoint file and transposed (Scratch.transposed), anything else copied."""
    from edgeport.export.streaming import Scratch

    out, staging = scratch or (Scratch(), Scratch())
    K = w.shape[1] if transposed else w.shape[0]
    N = w.shape[0] if transposed else w.shape[1]
    step = _rows_per_chunk(4 * K)
    parts = []
    for n0 in range(0, N, step):
        if transposed and w.dtype == torch.float32:
            b = out.transposed(w[n0:n0 + step].detach(), staging)  # (K, n)
        else:
            b = out.contiguous((w[n0:n0 + step].t() if transposed else w[:, n0:n0 + step]).detach(), torch.float32)
        parts.append(q.qbits_block_quant(b.numpy()))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3)), (K, N)


def quantize_gather_table(table: torch.Tensor, q) -> tuple:
    """A (V, H) float table -> (packed int4 bytes, V*H/2 uint8, scales (V, H/b), zero points or None),
    slice by slice over V (quantize_axis 1: blocks run along H)."""
    V, H = table.shape
    step = _rows_per_chunk(4 * H)
    parts = [q.quantize_ndarray(np.ascontiguousarray(table[v0:v0 + step].detach().float().numpy()), 1,
                                q.config.block_size, q.config.is_symmetric) for v0 in range(0, V, step)]
    zp = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), zp


def int4_targets(proto, plan: list, params: dict) -> dict:
    """{initializer name: (op, node)} for planned 2-D weights read by exactly one node: op "matmul" when
    that node is MatMul reading it as B, "gather" when a Gather reads it as the table (what
    MatMulNBitsQuantizer with op_types ("MatMul", "Gather") rewrites); the rest stay float."""
    planned = {name: src for name, src, _ in plan if params[src].dim() == 2}
    readers = {}
    for n in proto.graph.node:
        for k, i in enumerate(n.input):
            if i in planned:
                readers.setdefault(i, []).append((n, k))
    out = {}
    for name, uses in readers.items():
        if len(uses) != 1:
            continue
        (n, k), = uses
        if n.op_type == "MatMul" and k == 1 and n.domain in ("", "ai.onnx"):
            out[name] = ("matmul", n)
        elif n.op_type == "Gather" and k == 0 and n.domain in ("", "ai.onnx"):
            out[name] = ("gather", n)
    return out


def _replace(proto, node, new) -> None:
    idx = list(proto.graph.node).index(node)
    del proto.graph.node[idx]
    proto.graph.node.insert(idx, new)


def write_int4_weights(proto, plan: list, params: dict, data_path: Path, scheme, progress=None,
                       folded: list = ()) -> dict:
    """Write every planned weight to `data_path`: MatMul weights and Gather tables as int4 (nodes
    rewritten in `proto` as the module docstring draws), the rest (norms, biases) as in write_weights;
    then the `folded` (name, Lazy) weights of streaming_fold: MoE experts as QMoE (write_qmoe_experts),
    others as float. One weight's slices in memory at a time; its mapped pages released after.
    -> {"bytes": written, "matmul_nbits": count, "gather_block_quantized": count, "qmoe": count}."""
    from onnx import TensorProto, helper

    from edgeport.export.streaming import Scratch

    q, scratch = _quantizer(scheme), (Scratch(), Scratch())
    targets = int4_targets(proto, plan, params)
    total = sum(params[src].numel() * params[src].element_size() for _, src, _ in plan)
    total += sum(lazy.nbytes for _, lazy in folded)
    done, counts = 0, {"matmul_nbits": 0, "gather_block_quantized": 0}
    with open(data_path, "wb") as f:
        for name, src, transposed in plan:
            w = params[src]
            kind, node = targets.get(name, ("float", None))
            if kind == "matmul":
                (packed, scales, zp), (K, N) = quantize_matmul_weight(w, transposed, q, scratch)
                inputs = [node.input[0], name + "_Q4", name + "_scales"]
                tensors = [(name + "_Q4", packed, TensorProto.UINT8), (name + "_scales", scales, TensorProto.FLOAT)]
                if not scheme.symmetric:
                    inputs.append(name + "_zero_points")
                    tensors.append((name + "_zero_points", zp, TensorProto.UINT8))
                attrs = {"K": K, "N": N, "bits": 4, "block_size": scheme.block_size}
                if accuracy_level(scheme):  # the quantizer writes the attribute only when not 0
                    attrs["accuracy_level"] = accuracy_level(scheme)
                new = helper.make_node("MatMulNBits", inputs, list(node.output), name=node.name + "_Q4" if node.name
                                       else "", domain=MS_DOMAIN, **attrs)
            elif kind == "gather":
                packed, scales, zp = quantize_gather_table(w, q)
                qtype = TensorProto.INT4 if scheme.symmetric else TensorProto.UINT4
                inputs = [name + "_Q4", node.input[1], name + "_scales"]
                tensors = [(name + "_Q4", packed, qtype, list(w.shape)), (name + "_scales", scales, TensorProto.FLOAT)]
                if not scheme.symmetric:
                    inputs.append(name + "_zero_points")
                    tensors.append((name + "_zero_points", zp, qtype, list(scales.shape)))
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                new = helper.make_node("GatherBlockQuantized", inputs, list(node.output),
                                       name=node.name + "_Q4" if node.name else "", domain=MS_DOMAIN,
                                       gather_axis=axis, quantize_axis=1, block_size=scheme.block_size)
            else:
                arr = (w.detach().t() if transposed else w.detach()).contiguous().numpy()
                tensors, new = [(name, arr, helper.np_dtype_to_tensor_dtype(arr.dtype))], None
            for tname, arr, dtype, *dims in tensors:
                arr = np.ascontiguousarray(arr)
                append_tensor(proto, f, data_path, tname, dims[0] if dims else arr.shape, dtype, arr.nbytes,
                              [memoryview(arr).cast("B")])
            if new is not None:
                _replace(proto, node, new)
                counts["matmul_nbits" if kind == "matmul" else "gather_block_quantized"] += 1
            done += w.numel() * w.element_size()
            release_pages(w)
            if progress is not None:
                progress(done, total)
        counts["qmoe"] = write_qmoe_experts(proto, f, data_path, folded, params, scheme, progress, done, total)
        written = f.tell()
    if not any(o.domain == MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return {"bytes": written, **counts}


def write_qmoe_experts(proto, f, data_path: Path, folded: list, params: dict, scheme, progress, done: int,
                       total: int) -> int:
    """Folded weights that a com.microsoft.MoE node reads as fc1/fc2/fc3 -> packed int4 experts and their
    scales (qmoe_packing.quantize_rows, `edgeport quantize`'s QMoE packing), the node rewritten as QMoE
    (qmoe_packing.qmoe_node); other folded weights written as float (streaming_fold.write_folded).

    Quantized one expert at a time, in slices of at most CHUNK_BYTES of fp32 rows (rows are quantized
    apart, so the bytes equal the whole tensor's): the packed bytes go to the file as they come, the
    scales (1/block of the fp32 size: Mixtral-8x7B fc1, 0.12 GB) are kept until the expert stack is
    written. The mapped pages the slices read are released after each expert. -> QMoE nodes written."""
    from onnx import TensorProto

    from edgeport.export.streaming import append_tensor, release_pages
    from edgeport.export.streaming_fold import write_folded
    from edgeport.qmoe_packing import bits_and_block, qmoe_node, quantize_rows, weight_inputs

    bits, block = bits_and_block(scheme)
    lazies = dict(folded)
    moes = [n for n in proto.graph.node if n.op_type == "MoE" and n.domain == MS_DOMAIN
            and all(name in lazies for name in weight_inputs(n).values())]
    experts = {name for n in moes for name in weight_inputs(n).values()}
    release = lambda name: release_pages(params[name])  # noqa: E731
    done = write_folded(proto, f, data_path, [(k, v) for k, v in folded if k not in experts], release,
                        progress, done, total)
    for node in moes:
        quantized = {}
        for k, name in weight_inputs(node).items():
            lazy = lazies[name]
            E, N, K = lazy.shape
            scales = []

            def packed(lazy=lazy, scales=scales, E=E, N=N, K=K):
                step = _rows_per_chunk(4 * K)
                for e in range(E):
                    for n0 in range(0, N, step):
                        rows = np.asarray(lazy.rows(e)[n0:n0 + step], np.float32)
                        qe, se = quantize_rows(rows[None], bits, block)  # (1, n, K*bits/8), scales (1, n[, G])
                        scales.append(se[0])
                        yield memoryview(np.ascontiguousarray(qe[0])).cast("B")
                    for p in lazy.params():
                        release(p)

            append_tensor(proto, f, data_path, name + "_q", [E, N, K * bits // 8], TensorProto.UINT8,
                          E * N * K * bits // 8, packed())
            s = np.ascontiguousarray(np.concatenate(scales).reshape(E, N, -1) if block else
                                     np.concatenate(scales).reshape(E, N))
            append_tensor(proto, f, data_path, name + "_scales", list(s.shape), TensorProto.FLOAT, s.nbytes,
                          [memoryview(s).cast("B")])
            quantized[k] = (name + "_q", name + "_scales")
            done += lazy.nbytes
            if progress is not None:
                progress(done, total)
        _replace(proto, node, qmoe_node(node, quantized, bits, block))
    return len(moes)


# ---------------------------------------------------------------- accuracy on a token budget

def held_out_tokens(ref, tokenizer_file: Path | None, eos_id, budget: int) -> tuple:
    """(N,) int64 ids to score and where they came from: the evaluation half of pydoc_data.topics (odd
    topics, as quantize/text.py splits them) through the artifact's tokenizer, paragraphs joined by
    `eos_id`; seeded random ids when there is no tokenizer or the weights are random."""
    if tokenizer_file is None or ref.random_weights:
        why = "no tokenizer" if tokenizer_file is None else "random weights"
        return np.random.default_rng(0).integers(3, ref.config.vocab_size, budget + 1), f"random token ids ({why})"
    import pydoc_data.topics as t
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    ids = []
    for topic in [t.topics[k] for k in sorted(t.topics)][1::2]:
        for para in topic.split("\n\n"):
            ids += tok.encode(para).ids + ([eos_id] if eos_id is not None else [])
        if len(ids) > budget:
            break
    return np.asarray(ids[:budget + 1], np.int64), "pydoc_data.topics (evaluation half)"


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed next-token negative log-likelihood of logits (b, S, V) float32 for targets (b, S), one
    window at a time (log-softmax in float32: a few (S, V) temporaries, not the whole batch in float64)."""
    total = 0.0
    for row, tgt in zip(logits, targets):
        logp = torch.log_softmax(torch.from_numpy(row), -1)
        total -= float(logp.gather(-1, torch.from_numpy(tgt)[:, None]).double().sum())
    return total


def accuracy_report(ref, path: Path, block: dict, tokens: np.ndarray, source: str, batch: int = 2) -> dict:
    """Perplexity and greedy agreement of the int4 artifact at `path` against the float reference over
    `tokens` in windows of WINDOW (empty cache each), artifact pass first, then the reference."""
    import gc

    from edgeport.export.streaming_validate import releasing_weights
    from edgeport.runtime.generate import open_decoder
    from edgeport.runtime.session import ort_session_config

    window = min(WINDOW, int(block.get("max_tokens") or WINDOW))
    n = (len(tokens) - 1) // window
    x, y = tokens[:n * window].reshape(n, window), tokens[1:n * window + 1].reshape(n, window)
    pos = np.broadcast_to(np.arange(window, dtype=np.int64), x.shape)
    with ort_session_config({"session.disable_prepacking": "1"}):
        dec = open_decoder(path, block)
    got = []
    for i in range(0, n, batch):
        dec.reset(len(x[i:i + batch]))
        got.append(np.array(dec.step(x[i:i + batch], np.ones_like(x[i:i + batch]), pos[i:i + batch])))
    del dec
    gc.collect()
    s = {"nll_float": 0.0, "nll_quant": 0.0, "agree": 0, "diff": 0.0, "absmax": 0.0}
    with releasing_weights(ref.model), torch.inference_mode():
        for i, q in zip(range(0, n, batch), got):
            rows = torch.from_numpy(x[i:i + batch])
            f = ref.model(rows, torch.ones_like(rows), torch.from_numpy(pos[i:i + batch].copy()))[0].numpy()
            s["nll_float"] += _nll(f, y[i:i + batch])
            s["nll_quant"] += _nll(q, y[i:i + batch])
            s["agree"] += int((f.argmax(-1) == q.argmax(-1)).sum())
            s["diff"] = max(s["diff"], float(np.abs(f - q).max()))
            s["absmax"] = max(s["absmax"], float(np.abs(f).max()))
    ppl_f, ppl_q = math.exp(s["nll_float"] / y.size), math.exp(s["nll_quant"] / y.size)
    return {"text": source, "tokens": int(y.size), "window": window, "against": "the float reference (torch, "
            "memory-mapped checkpoint): no float artifact exists", "perplexity_float": ppl_f,
            "perplexity_quantized": ppl_q, "perplexity_relative_delta": ppl_q / ppl_f - 1.0,
            "greedy_next_token_agreement": s["agree"] / y.size, "max_abs_logit_diff": s["diff"],
            "reference_absmax": s["absmax"]}


# ---------------------------------------------------------------- the pipeline for --streaming --quantize

def int4_scheme(quantize: str, target: str, task: str):
    """The schemes.Scheme `export --streaming --quantize` writes; EdgeportError unless it is an int4
    scheme on ONNX (other schemes: quantize the streamed fp32 export with `edgeport quantize`)."""
    from edgeport.errors import EdgeportError
    from edgeport.schemes import resolve

    scheme = resolve(quantize, target, task)
    if scheme.weights != "int4" or target != "onnx" or scheme.granularity != "block":
        raise EdgeportError(f"--streaming --quantize writes int4 ONNX weights from the checkpoint (got {scheme.tag} "
                            f"for {target}); export --streaming, then `edgeport quantize` the folder")
    return scheme


def export_int4(ref, contract, tgt, opts, out: Path, steps) -> Path:
    """export_reference for `--streaming --quantize int4...`: trace, int4 weights from the checkpoint,
    tokenizer, accuracy on EVAL_TOKENS held-out tokens against the float reference, manifest (precision,
    quantization block as `edgeport quantize` writes it, no fp32 parity checks: converter.validation
    says why). The folder appears complete or not at all. -> `out`."""
    import contextlib
    import dataclasses

    import edgeport
    from edgeport.export.onnx import artifact_files
    from edgeport.export.streaming import lower_streaming
    from edgeport.manifest import Manifest, Sha256InBackground, atomic_output_dir

    scheme = int4_scheme(opts.quantize, tgt.name, ref.task)
    with atomic_output_dir(out) as tmp, contextlib.ExitStack() as later:
        with steps.step(f"exporting {ref.family.name} {ref.task} to {tgt.name}, {scheme.tag} weights from the checkpoint"):
            lowered = lower_streaming(ref, contract, tgt, tmp, opts, steps, scheme)
            files = artifact_files(tmp, lowered.artifact)
            size = sum(f.stat().st_size for f in files)
            fp32 = sum(p.numel() * 4 for p in ref.model.parameters())
            steps.note(f"{lowered.artifact}: {size / 2**20:.1f} MiB ({size / fp32:.1%} of the fp32 weights)")
        hashing = later.enter_context(Sha256InBackground(files))  # final: hashed while the scoring runs
        with steps.step("writing tokenizer files"):
            tok, block = contract.write_tokenizer(ref, lowered, None, tmp, steps)
        with steps.step(f"scoring against the float reference on up to {EVAL_TOKENS} held-out tokens"):
            tokens, source = held_out_tokens(ref, tmp / tok.file if tok else None,
                                             (block.get("eos_token_ids") or [None])[0], EVAL_TOKENS)
            acc = accuracy_report(ref, tmp / lowered.artifact, block, tokens, source)
            steps.note(f"perplexity {acc['perplexity_float']:.3f} -> {acc['perplexity_quantized']:.3f} "
                       f"({acc['perplexity_relative_delta']:+.2%}), greedy next-token agreement "
                       f"{acc['greedy_next_token_agreement']:.1%} over {acc['tokens']} tokens")
        with steps.step("writing edgeport.json"):
            ins, outs = contract.io_specs(tgt.input_dtype, None)
            quant = {"tag": scheme.tag, **scheme.axes(), "keep_float": [], "float_artifact": None,
                     "float_sha256": None, "float_size_bytes": fp32, "size_ratio": size / fp32,
                     "calibration": None, "calibration_samples": 0, "from_checkpoint": True, "accuracy": acc}
            m = Manifest(family=ref.family.name, task=ref.task, target=tgt.name, artifact=lowered.artifact,
                         inputs=ins, outputs=outs, max_sequence_length=contract.max_sequence_length(None, block),
                         tokenizer=tok, converter=lowered.converter, custom_ops=lowered.custom_ops,
                         source=ref.source, random_weights=ref.random_weights, notes=list(ref.family.notes),
                         sha256=hashing.result(), size_bytes=size, parity=[], parity_passed=False,
                         edgeport_version=edgeport.__version__, decoder=block)
            m = dataclasses.replace(m, precision=scheme.weights if scheme.activations == "fp32"
                                    else f"{scheme.weights}-{scheme.activations}", quantization=quant)
            (tmp / "edgeport.json").write_text(m.to_json())
    if not steps.quiet:
        print(f"wrote {out}/{lowered.artifact}", flush=True)
    return out
