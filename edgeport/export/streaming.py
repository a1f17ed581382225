"""Streaming ONNX export for decoders: peak memory about one copy of the weights, not four.

Where the in-memory path's memory goes (125M-parameter Mistral, 0.50 GB of fp32 weights, measured with
benchmarks/bench_export_memory.py profile): the reference built with random weights and then loaded
from the checkpoint (safetensors' load_file copy beside it), torch.onnx's protobuf holding every
weight, `onnx.load` of the written file for the post-passes, then onnxruntime's copy during
validation beside the reference: 2.46 GB peak RSS, 4.9x the weights.

The streaming path removes each copy:

    checkpoint.safetensors --mmap--> reference parameters (zero-copy views of fp32 tensors)
    reference, weights passed as graph inputs on zero-page placeholders --torch.onnx--> graph only,
        the weights are graph inputs named by their parameter names (no constant folding of weights;
        no parameter values for torch.onnx's shape inference to serialise)
    graph inputs -> initializers, one tensor at a time: read from the mmap, transposed where the
        graph's only use is Transpose(perm=[1, 0]) (what constant folding would have stored), written
        to model.onnx.data, then the tensor's mapped pages released; the protobuf never holds a
        weight over 1 KiB
    validation (streaming_validate.py): the reference (while writing), then the artifact, never both resident

The artifact computes what the in-memory one computes: the same nodes on the same weights (the
in-memory graph also folds shape subgraphs, which onnxruntime folds at load time here);
tests/test_export_streaming.py checks the weights byte for byte and the outputs bit for bit.
Weights the graph computes from weights (Mixtral's experts stacked per layer, as the MoE lowerings
take them) are folded slice by slice, one expert at a time (streaming_fold.py).

Limits (each refused with an EdgeportError, never a wrong artifact): STREAMING_FAMILIES, weight
subgraphs that cannot be sliced along their first axis (streaming_fold.SLICED), lowerings and targets
with ONNX graph passes (they load the whole graph), checkpoints without safetensors weights.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from edgeport.errors import EdgeportError

STREAMING_FAMILIES = ("mistral", "mixtral", "gpt2")
# How a streamed artifact is checked (the manifest's converter.validation; export/streaming_validate.py).
VALIDATION = ("decoders: the reference on the memory-mapped checkpoint first, one layer at a time over every "
              "chunk, releasing each layer's pages after it ran (while the weights are written), then the whole "
              "artifact in onnxruntime (weights memory-mapped, prepacking off), same plans and tolerances as the "
              "in-memory export; never both in memory at once")
VALIDATION_INT4 = ("int4 weights written from the checkpoint, no float artifact: no fp32 parity checks (int4 "
                   "differs from fp32 by design); held-out perplexity and greedy agreement against the float "
                   "reference on a token budget (quantization.accuracy), artifact first, then the reference")
INLINE_BYTES = 1024  # tensors smaller than this stay inside model.onnx (as onnx.save's size_threshold)
ALIGN = 4096  # external data offsets on page boundaries: onnxruntime can map them instead of copying
from edgeport.export.streaming_checkpoint import (  # noqa: F401  the checkpoint I/O, re-exported
    _DTYPES,
    _OPEN,
    SafetensorsFile,
    Scratch,
    open_checkpoint,
    read_tensor,
    release_pages,
)


@contextlib.contextmanager
def parameters_on_meta():
    """While active, every nn.Parameter a module registers lives on the meta device (no memory, no
    initialisation cost); buffers (RoPE tables) stay real."""
    register = nn.Module.register_parameter

    def on_meta(self, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _set_parameter(model: nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    module._parameters[leaf] = nn.Parameter(value, requires_grad=False)


def bind_checkpoint(model: nn.Module, tensors: dict, prefix: str, head_prefixes: tuple) -> list:
    """Give every meta parameter of `model` its checkpoint tensor (fp32 views of the mapped file; other
    dtypes are converted, one tensor at a time). Key rules as checkpoint.fit_state_dict (bare backbone
    keys get `prefix`; TIED_FALLBACKS). Returns the head parameters the checkpoint lacks (left on meta);
    EdgeportError on a missing backbone tensor or a shape the config contradicts."""
    bare = not any(k.startswith(prefix + ".") for k in tensors)
    model.__dict__["_mapped_files"] = set(tensors.values())  # alive while the model is (release_pages)
    fallbacks = getattr(model, "TIED_FALLBACKS", {})
    missing = []
    for name, param in list(model.named_parameters()):
        key = name[len(prefix) + 1:] if bare and name.startswith(prefix + ".") else name
        key = key if key in tensors or name not in fallbacks else fallbacks[name]
        if key not in tensors:
            missing.append(name)
            continue
        t = tensors[key].tensor(key)
        if tuple(t.shape) != tuple(param.shape):
            raise EdgeportError(f"config contradicts weights: '{name}' is {tuple(t.shape)} in the "
                                f"checkpoint but the config implies {tuple(param.shape)}")
        _set_parameter(model, name, t if t.dtype == param.dtype else t.to(param.dtype))
    backbone = [m for m in missing if not m.startswith(head_prefixes)]
    if backbone:
        more = f" (+{len(backbone) - 1} more)" if len(backbone) > 1 else ""
        raise EdgeportError(f"checkpoint lacks '{backbone[0]}'{more}: wrong family or config?")
    return missing


def load_lazy_reference(model: str, task: str | None, checkpoint: str | None, allow_random_head: bool = False):
    """Like reference_models.load_reference, for a safetensors checkpoint folder: the model is built with
    parameters on the meta device, then each one views its tensor in the memory-mapped checkpoint.

    Missing head tensors are random (seeded, small) with `allow_random_head`, else an EdgeportError;
    presets (no checkpoint) and families outside STREAMING_FAMILIES are refused with one line."""
    from edgeport.reference_models import Reference, all_presets
    from edgeport.reference_models import checkpoint as ckpt
    from edgeport.reference_models.registry import family_for_model_type

    presets = {p: fam.presets[p] for p, fam in all_presets().items()}
    src = ckpt.resolve(model, checkpoint, presets)
    if src.folder is None:
        raise EdgeportError(f"--streaming reads a checkpoint folder; '{model}' is a preset without weights")
    family = family_for_model_type(str(src.hf_config.get("model_type")))
    if family.name not in STREAMING_FAMILIES:
        raise EdgeportError(f"--streaming covers {', '.join(STREAMING_FAMILIES)} so far, not '{family.name}'")
    task = task or family.default_task
    if task not in family.tasks:
        raise EdgeportError(f"family '{family.name}' has no task '{task}'; tasks: {', '.join(family.tasks)}")
    config = family.config_cls.from_hf(src.hf_config)
    with parameters_on_meta():
        net = family.build(config, task)
    missing = bind_checkpoint(net, open_checkpoint(src.folder), net.prefix, net.head_prefixes())
    if missing and not allow_random_head:
        raise EdgeportError(f"{src.name}: the checkpoint has no weights for the {task} head ({missing[0]}...); "
                            "pass --allow-random-head to export it with random ones (fine-tune first)")
    torch.manual_seed(0)
    for name in missing:  # head tensors only: small (num_labels x hidden)
        shape = dict(net.named_parameters())[name].shape
        _set_parameter(net, name, torch.randn(shape) * getattr(config, "initializer_range", 0.02))
    return Reference(family, config, net.eval(), task, src.name, src.folder, bool(missing), missing)


# ---------------------------------------------------------------- tracing without weights

class _WeightsAsInputs(nn.Module):
    """forward(*model inputs, *weights) = model(*model inputs) with its parameters replaced by `weights`
    (in the order of model.named_parameters(); a tied parameter is one weight wherever it is used).
    Traced, the weights are graph inputs named by their parameter names instead of module parameters:
    torch.onnx's ONNX shape inference then sees no parameter values. With parameters it serialises each
    weight a node reads into a TensorProto (measured: +0.72 GB at 436M, growing with the model; freed
    memory the allocator keeps). torch.func.functional_call does this swap but refuses to run traced."""

    def __init__(self, model: nn.Module, n_inputs: int):
        super().__init__()
        self.__dict__["inner"] = model  # not a submodule: the wrapper has no parameters of its own
        self.n_inputs = n_inputs
        order = {id(p): k for k, (_, p) in enumerate(model.named_parameters())}
        self.slots = [(m, leaf, order[id(p)]) for m in model.modules()
                      for leaf, p in m._parameters.items() if p is not None]

    def forward(self, *args):
        inputs, weights = args[:self.n_inputs], args[self.n_inputs:]
        saved = [(m, leaf, m._parameters[leaf]) for m, leaf, _ in self.slots]
        for m, leaf, k in self.slots:
            m._parameters[leaf] = weights[k]
        try:
            return self.inner(*inputs)
        finally:
            for m, leaf, p in saved:
                m._parameters[leaf] = p


def zero_placeholders(params: dict) -> dict:
    """{name: tensor of the parameter's shape and dtype} viewing one anonymous zero-filled mapping the
    size of the largest parameter. Reading untouched anonymous pages maps the kernel's shared zero page,
    so the placeholders cost no resident memory however large the model (only pages written to would)."""
    size = max((p.numel() * p.element_size() for p in params.values()), default=0)
    buf = mmap.mmap(-1, max(size, mmap.PAGESIZE))
    return {name: torch.frombuffer(buf, dtype=p.dtype, count=p.numel()).view(p.shape) for name, p in params.items()}


def trace_graph(model: nn.Module, contract, opset: int, symbolics: tuple = (), custom_opsets: dict | None = None):
    """torch.onnx (TorchScript) of `model` with its weights as graph inputs (named by parameter name, fed
    zero placeholders, see _WeightsAsInputs and zero_placeholders), without constant folding (which
    would rename the weights it transposes) -> onnx.ModelProto holding no weight. Memory: the traced
    activations and the graph, independent of the weights' size."""
    import io

    import onnx

    for op, fn in symbolics:
        torch.onnx.register_custom_op_symbolic(op, fn, opset)
    params = dict(model.named_parameters())  # tied parameters once
    args = contract.sample_args()
    wrapper = _WeightsAsInputs(model, len(args))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-derived Python ints
        torch.onnx.export(wrapper, (*args, *zero_placeholders(params).values()), buf,
                          input_names=list(contract.input_names) + list(params),
                          output_names=contract.output_names, dynamic_axes=contract.dynamic_axes(),
                          opset_version=opset, dynamo=False, do_constant_folding=False,
                          custom_opsets=custom_opsets)
    return onnx.load_from_string(buf.getvalue())


# ---------------------------------------------------------------- weights written one at a time

def weight_plan(proto, params: dict) -> list:
    """[(initializer name, parameter name, transposed)] for the graph inputs that are parameters.

    Pattern folded (what torch.onnx's constant folding does to nn.Linear weights): parameter W whose
    consumer is `Transpose(perm=[1, 0])` -> an initializer W^T named as the Transpose output, and the
    node removed. W itself is stored only when another node reads it (a tied embedding). The graph
    inputs of parameters and the folded Transpose nodes are removed from `proto` in place."""
    from onnx import helper

    weights = [i.name for i in proto.graph.input if i.name in params]
    readers = {}  # parameter name -> the nodes reading it, in graph order (one pass, not one per weight)
    for n in proto.graph.node:
        for i in dict.fromkeys(n.input):
            if i in params:
                readers.setdefault(i, []).append(n)
    plan, drop = [], set()
    for name in weights:
        uses = readers.get(name, [])
        folded = [n for n in uses if n.op_type == "Transpose" and params[name].dim() == 2
                  and [helper.get_attribute_value(a) for a in n.attribute if a.name == "perm"] in ([[1, 0]], [])]
        plan += [(n.output[0], name, True) for n in folded]
        drop.update(n.output[0] for n in folded)  # protobuf wrappers have no stable identity
        if len(folded) < len(uses):
            plan.append((name, name, False))
    _remove(proto.graph.node, lambda n: n.op_type == "Transpose" and n.output[0] in drop)
    _remove(proto.graph.input, lambda i: i.name in params)
    return plan


def _remove(repeated, doomed) -> None:
    """Delete the elements of a protobuf repeated field for which doomed(element) holds, in place."""
    for k in reversed([k for k, e in enumerate(repeated) if doomed(e)]):
        del repeated[k]


def append_tensor(proto, f, data_path: Path, name: str, dims: list, data_type: int, nbytes: int, chunks) -> None:
    """Add initializer `name` (ONNX TensorProto.DataType `data_type`, shape `dims`) whose raw bytes are
    the concatenation of `chunks` (bytes-like, `nbytes` in all) to `proto`: inside it under INLINE_BYTES,
    else appended to the open external-data file `f` (`data_path`) at an ALIGN-byte boundary."""
    from onnx import TensorProto

    tensor = TensorProto(name=name, dims=list(dims), data_type=int(data_type))
    if nbytes < INLINE_BYTES:
        tensor.raw_data = b"".join(bytes(c) for c in chunks)
    else:
        f.write(b"\0" * (-f.tell() % ALIGN))
        offset = f.tell()
        for c in chunks:
            f.write(c)
        if f.tell() - offset != nbytes:
            raise AssertionError(f"{name}: wrote {f.tell() - offset} bytes, expected {nbytes}")
        for key, value in (("location", data_path.name), ("offset", offset), ("length", nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        tensor.data_location = TensorProto.EXTERNAL
    proto.graph.initializer.append(tensor)


def planned_arrays(plan: list, params: dict):
    """Yield (name, parameter name, array) for each `plan` entry in order: the bytes as written (numpy,
    row-major) in a reused Scratch buffer, read from the checkpoint file (read_tensor: no mapped page
    faulted in), or, where the plan says transposed, transposed from the checkpoint's pages mapped in one
    call (Scratch.transposed; through a staging buffer where they cannot be). An array is valid until
    the caller asks for the next. Memory: 2x the largest tensor.
    (Preparing the next tensor on a worker thread while this one was written kept ~0.3 GB of freed
    memory resident at 436M alongside the background sha256 thread: peak RSS 1.28x -> 1.43x the weights.)"""
    size = max((params[src].numel() * params[src].element_size() for _, src, _ in plan), default=0)
    out, staging = Scratch(size), Scratch(size)
    for name, src, transposed in plan:
        t = params[src].detach()
        arr = out.transposed(t, staging) if transposed else read_tensor(t, out.empty(t.shape, t.dtype))
        yield name, src, arr.numpy()


def write_weights(proto, plan: list, params: dict, data_path: Path, progress=None, folded: list = ()) -> int:
    """Append each planned tensor to `data_path` (external data, ALIGN-byte aligned) or inline it when
    under INLINE_BYTES, adding its initializer to `proto`. A tensor or two in memory at a time (the
    mapped checkpoint views, the transposed copies of the one being written and of the next, see
    planned_arrays); then the `folded` (name, Lazy) results of streaming_fold.fold_weight_subgraphs,
    one slice at a time. `progress(done_bytes, total_bytes)` is called after each tensor. Returns the
    bytes written to `data_path`."""
    from onnx import helper

    from edgeport.export.streaming_fold import write_folded

    total = sum(params[src].numel() * params[src].element_size() for _, src, _ in plan)
    total += sum(lazy.nbytes for _, lazy in folded)
    done = 0
    with open(data_path, "wb") as f:
        for name, src, arr in planned_arrays(plan, params):
            append_tensor(proto, f, data_path, name, arr.shape, helper.np_dtype_to_tensor_dtype(arr.dtype),
                          arr.nbytes, [memoryview(arr).cast("B")])
            done += arr.nbytes
            del arr
            release_pages(params[src])  # the mapped pages just copied out leave this process's RSS
            if progress is not None:
                progress(done, total)
        write_folded(proto, f, data_path, folded, lambda name: release_pages(params[name]), progress, done, total)
        return f.tell()


class Progress:
    """`progress(done, total)` (bytes) printing through `note` about every 10%: `written X / Y MiB, ETA Ns`
    while bytes remain (the ETA from the bytes per second so far, rounded up: never "0s" while work
    remains), `written Y / Y MiB in Ns` once all are done."""

    def __init__(self, note, what: str = "written"):
        self.note, self.what, self.t0, self.next = note, what, time.perf_counter(), 0.1

    def __call__(self, done: int, total: int):
        if total and done / total >= self.next:
            spent = time.perf_counter() - self.t0
            sizes = f"{self.what} {done / 2**20:,.0f} / {total / 2**20:,.0f} MiB"
            if done >= total:
                self.note(f"{sizes} in {spent:.0f}s")
            else:
                self.note(f"{sizes}, ETA {math.ceil(spent * (total - done) / max(done, 1))}s")
            self.next = min(1.0, done / total + 0.1)


# ---------------------------------------------------------------- the pipeline's lowering step

def lower_streaming(ref, contract, tgt, tmp: Path, opts, steps, scheme=None, on_traced=None):
    """The streaming counterpart of export.lower for ONNX-route targets -> Lowered (model.onnx +
    model.onnx.data; with an int4 `scheme` (schemes.Scheme), model.<tag>.onnx with MatMulNBits /
    GatherBlockQuantized weights, streaming_int4.py). `on_traced()` is called once the graph is traced
    and the weight plan made, before the weights are written (from then on this function reads only the
    parameters it collected, not the model: streaming_validate.ReferenceInBackground.start). Raises
    EdgeportError for a target or lowering that rewrites the written graph (graph passes load it whole)
    or for a non-ONNX target."""
    import onnx

    from edgeport.export.kv_layout import to_per_layer
    from edgeport.export.lowerings import Lowered, choose_lowering
    from edgeport.export.onnx import custom_ops
    from edgeport.export.streaming_fold import fold_weight_subgraphs
    from edgeport.ops.registry import LoweringContext

    lowering, _ = choose_lowering(ref.family.name, tgt.name, opts.lowering, opts.quantize, opts.cpu_class)
    passes = (lowering.graph_passes if lowering else ()) + tgt.graph_passes
    if tgt.route != "onnx" or passes or (lowering is not None and lowering.validation is not None):
        raise EdgeportError(f"--streaming writes plain ONNX graphs; target '{tgt.name}'"
                            + (f" with lowering '{lowering.name}'" if lowering else "") + " needs the in-memory path")
    ctx = LoweringContext(ref.config, None)
    with lowering.applied(ref.model, ctx) if lowering else contextlib.nullcontext((ref.model, {})) as (model, notes):
        proto = trace_graph(model, contract, opts.opset, lowering.symbolics if lowering else (),
                            lowering.custom_opsets if lowering else None)
    if getattr(contract, "kv_layout", "stacked") == "per_layer":  # on the weightless graph (kv_layout.py)
        notes = {**notes, **to_per_layer(proto, contract.layers)}
    params = dict(ref.model.named_parameters())
    folded = fold_weight_subgraphs(proto, params)  # Mixtral's stacked experts (streaming_fold.py); else []
    plan = weight_plan(proto, params)
    steps.note(f"graph traced without weights: {len(proto.graph.node)} nodes, {len(plan) + len(folded)} weight tensors"
               + (f" ({len(folded)} computed from the weights slice by slice)" if folded else ""))
    name = f"model.{scheme.tag}.onnx" if scheme else "model.onnx"
    if on_traced is not None:
        on_traced()
    if scheme is None:
        written, extra = write_weights(proto, plan, params, tmp / (name + ".data"), Progress(steps.note), folded), {}
    else:
        from edgeport.export.streaming_int4 import write_int4_weights

        extra = write_int4_weights(proto, plan, params, tmp / (name + ".data"), scheme, Progress(steps.note, "quantized"),
                                   folded)
        written = extra.pop("bytes")
    # what onnx.save writes for a graph whose external tensors carry no raw_data, without its Python walk
    # over every node's attributes looking for raw_data to move out (0.5-0.9 s at 1B, measured)
    (tmp / name).write_bytes(proto.SerializeToString())
    try:
        onnx.checker.check_model(str(tmp / name))
    except onnx.checker.ValidationError as e:
        raise EdgeportError(f"exported ONNX graph is invalid: {str(e).splitlines()[0]}") from None
    converter = {"torch": torch.__version__, "onnx": onnx.__version__, "opset": opts.opset,
                 "exporter": "torch.onnx (TorchScript), streaming: weights from the memory-mapped checkpoint",
                 "external_data_bytes": written, **({"quantized_nodes": extra} if scheme else {}),
                 "validation": VALIDATION_INT4 if scheme else VALIDATION, **(lowering.converter if lowering else {}),
                 **notes, **dict(tgt.manifest_notes), "validated_by": tgt.validated_by}
    if lowering is not None:
        converter["lowering"] = lowering.name
    return Lowered(name, converter, custom_ops(tmp / name), None)


# ---------------------------------------------------------------- preflight: refuse before any work

# Memory per path as a multiple of the fp32 weights, measured with benchmarks/bench_export_memory.py
# (Mistral 125M and 436M, see README "Export at scale"): in-memory 4.9x peak RSS (reference, safetensors
# copy, torch.onnx protobuf, onnx.load, onnxruntime's prepacked copy during validation). Streaming: the
# artifact's memory-mapped weights while onnxruntime validates it (1.0x, file-backed) above the base;
# writing and the reference pass keep one tensor or one layer resident (436M: 2.04 GB = 0.30 + 1.0x).
# Streaming int4: the int4 artifact mapped while it is scored (about 0.16x with its scales) and one layer.
PEAK_FACTOR = {"in-memory": 5.0, "streaming": 1.0, "streaming int4": 0.3}
# In memory, per route: "onnx" measured (above); "tflite" NOT measured separately: the ONNX factor is used
# (the reference plus the converter's copies; litert-torch's and Keras' own peaks are unmeasured).
IN_MEMORY_FACTOR = {"onnx": PEAK_FACTOR["in-memory"], "tflite": PEAK_FACTOR["in-memory"]}
BASE_BYTES = 0.5e9  # python, torch, onnxruntime and the traced graph (0.35-0.45 GB measured)


def weight_stats(model: str, task: str | None, checkpoint: str | None) -> tuple[int, int]:
    """(fp32 bytes of every parameter, bytes of the largest) of the model `export` would build, from its
    config alone: the model is built with parameters on the meta device (no memory, no checkpoint read)."""
    return _model_stats(model, task, checkpoint)[:2]


def _model_stats(model: str, task: str | None, checkpoint: str | None):
    """weight_stats' two numbers, then the checkpoint Source and the family (for preflight's hint)."""
    from edgeport.reference_models import all_presets
    from edgeport.reference_models import checkpoint as ckpt
    from edgeport.reference_models.registry import family_for_model_type

    presets = {p: fam.presets[p] for p, fam in all_presets().items()}
    src = ckpt.resolve(model, checkpoint, presets)
    family = family_for_model_type(str(src.hf_config.get("model_type")))
    task = task or family.default_task
    if task not in family.tasks:
        raise EdgeportError(f"family '{family.name}' has no task '{task}'; tasks: {', '.join(family.tasks)}")
    with parameters_on_meta():
        net = family.build(family.config_cls.from_hf(src.hf_config), task)
    sizes = [4 * p.numel() for p in net.parameters()]
    return sum(sizes), max(sizes, default=0), src, family


def streaming_applies(src, family, target: str) -> bool:
    """Whether --streaming can export this source for `target` (load_lazy_reference's and lower_streaming's
    conditions): a checkpoint folder with safetensors weights, a family in STREAMING_FAMILIES, a target on
    the ONNX route without graph passes. `src`: reference_models.checkpoint.Source; `target`: a TARGETS name."""
    from edgeport.export.targets import TARGETS

    tgt = TARGETS.get(target)
    if src.folder is None or family.name not in STREAMING_FAMILIES or tgt is None:
        return False
    if tgt.route != "onnx" or tgt.graph_passes:
        return False
    folder = Path(src.folder)
    return (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()


def available_bytes() -> int:
    """Memory this process can still use (edgeport.runtime.machine.available_memory_bytes: MemAvailable
    capped by the cgroup v2 limit and `ulimit -v`). Raises KeyError where /proc/meminfo is absent."""
    from edgeport.runtime.machine import available_memory_bytes

    avail = available_memory_bytes()
    if avail is None:
        raise KeyError("MemAvailable")
    return avail


def route_factor(target: str) -> tuple[float, str]:
    """(in-memory PEAK_FACTOR, the route it is for) for `target`: a TARGETS name, or "auto" (every route a
    candidate may take: the most expensive one, as the reference stays loaded while each is exported)."""
    from edgeport.export.targets import TARGETS, get_target

    routes = sorted({t.route for t in TARGETS.values()}) if target == "auto" else [get_target(target).route]
    return max((IN_MEMORY_FACTOR[r], r) for r in routes)


def preflight(model: str, task: str | None, checkpoint: str | None, streaming: bool, available=None,
              quantize: str | None = None, target: str = "onnx") -> int:
    """Estimate the export's peak memory from the config and refuse, before any work, when the machine
    cannot hold it: EdgeportError with the numbers (one line). Returns the estimate in bytes.

    Estimate: in memory, IN_MEMORY_FACTOR[route of `target`] x fp32 weights + BASE_BYTES (`target` "auto":
    the most expensive route, route_factor); streaming, PEAK_FACTOR[path] x fp32 weights + 2 x the largest
    tensor (a tensor and its transposed copy) + BASE_BYTES; `quantize` with `streaming`: the int4 path
    (streaming_int4.py). `available()`: bytes free (default available_bytes). The refusal suggests
    --streaming only where it applies (streaming_applies), else a machine with more memory."""
    weights, largest, src, family = _model_stats(model, task, checkpoint)
    path = ("streaming int4" if quantize else "streaming") if streaming else "in-memory"
    factor, route = (PEAK_FACTOR[path], "onnx") if streaming else route_factor(target)
    need = int(factor * weights + (2 * largest if streaming else 0) + BASE_BYTES)
    have = (available or available_bytes)()
    if need > have:
        if streaming:
            hint = ""
        elif streaming_applies(src, family, target):
            hint = "; try --streaming"
        else:
            hint = "; export it on a machine with more memory"
        what = f"{path} export" + (" (auto: its most expensive candidate)" if target == "auto" and not streaming
                                   else "" if streaming or route == "onnx" else f" ({route} route)")
        raise EdgeportError(f"not enough memory for the {what}: about {need / 1e9:.1f} GB needed "
                            f"({factor}x {weights / 1e9:.2f} GB of fp32 weights"
                            + (f" + 2x {largest / 1e9:.2f} GB largest tensor" if streaming else "")
                            + f" + {BASE_BYTES / 1e9:.1f} GB), {have / 1e9:.1f} GB available{hint} "
                            "(--no-memory-check to try anyway)")
    return need


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation failure: MemoryError, or torch's RuntimeError "can't allocate
    memory" (raised when the address space or the machine runs out, e.g. under `ulimit -v`)."""
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError)
                                              and "can't allocate memory" in str(error))


def allocation_failed(error: BaseException) -> str:
    """'an allocation of N GB failed' from torch's "you tried to allocate N bytes" in `error`, else
    'an allocation failed' (a MemoryError carries no size)."""
    import re

    found = re.search(r"tried to allocate (\d+) bytes", str(error))
    return f"an allocation of {int(found.group(1)) / 1e9:.1f} GB failed" if found else "an allocation failed"
