"""Weights computed from weights (Mixtral's stacked experts), folded one slice at a time while streaming.

The in-memory export lets torch.onnx's constant folding compute every subgraph that reads only
parameters and constants, and stores the result as one initializer. For Mixtral that is how the
expert weights are laid out (ops/moe.py, reference_models/mixtral.py's SparseMoe.stacked):

    experts.e.w1.weight (I, H) --Unsqueeze(0)--\\
                          ...  e = 0..E-1       Concat(axis 0) -> w1 (E, I, H)        (torch.stack)
    onnxruntime lowering ("default", "moe-only"), com.microsoft.MoE's fc1 rows interleaving gate and up:
        w1 --Unsqueeze(2)--\\
                            Concat(axis 2) -> (E, I, 2, H) --Reshape(0, -1, H)--> fc1 (E, 2I, H)
        w3 --Unsqueeze(2)--/
    generic lowering (every expert on every token): w1 --Transpose(0, 2, 1)--> (E, H, I)

The streaming trace (streaming.trace_graph) has no constant folding, so those nodes arrive over the
weights' graph inputs. `fold_weight_subgraphs` finds them (every node whose inputs are parameters,
constants or outputs of such nodes, and that reads a parameter), removes them from the graph, and
returns a `Lazy` for each result that the rest of the graph reads. A Lazy yields its tensor in slices
along axis 0 (`rows(e)`: for the expert stacks, one expert), so the writer appends it to the external
data one expert at a time and never assembles a stacked tensor: the peak is one expert's slice of the
result plus the inputs it copies from (fc1: two (I, H) expert matrices mapped + one (2I, H) copy;
Mixtral-8x7B in fp32: 0.47 GB), not one layer's stack (fc1 3.8 GB). The bytes equal the folded
initializer's: the same row-major layout, written slice after slice (tests/test_export_streaming_moe.py).

Shape arithmetic over the weights (Shape of a folded result, then Slice, Concat of shape vectors, ...)
reads no weight: it is computed whole with onnx's reference evaluator. An op that cannot be sliced
along axis 0 (below: SLICED) is an EdgeportError naming it: the export then needs the in-memory path.
A Transpose(perm [1, 0]) reading a single 2-D parameter is left to streaming.weight_plan (nn.Linear
weights, written transposed).
"""

from __future__ import annotations

import numpy as np

from edgeport.errors import EdgeportError

SLICED = ("Unsqueeze", "Concat", "Reshape", "Transpose")  # ops a Lazy computes slice by slice


class Lazy:
    """A tensor of `shape` (tuple of ints) and numpy `dtype` computed from parameters on demand.
    rows(e) -> ndarray of shape[1:], the e-th slice along axis 0 (a view where the ops allow);
    params() -> names of the parameters it reads (their mapped pages are released after writing)."""

    shape: tuple
    dtype: np.dtype

    def rows(self, e: int) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> set:
        return set()

    def value(self) -> np.ndarray:
        """The whole tensor (slices stacked): for small results only."""
        return np.stack([self.rows(e) for e in range(self.shape[0])]) if self.shape else self.rows(0)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class Param(Lazy):
    """A parameter as it is bound (a view of the memory-mapped checkpoint)."""

    def __init__(self, name: str, tensor):
        self.name, self.tensor = name, tensor
        self.shape, self.dtype = tuple(tensor.shape), tensor.detach().numpy().dtype

    def rows(self, e):
        return self.tensor.detach()[e].numpy()

    def value(self):
        return self.tensor.detach().numpy()

    def params(self):
        return {self.name}


class Const(Lazy):
    """A small tensor known whole (Constant nodes, shape arithmetic)."""

    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array)
        self.shape, self.dtype = self.array.shape, self.array.dtype

    def rows(self, e):
        return self.array[e]

    def value(self):
        return self.array


class _Op(Lazy):
    """A sliced op over `inputs` (Lazy)."""

    def __init__(self, inputs: list, shape: tuple, dtype):
        self.inputs, self.shape, self.dtype = inputs, tuple(int(d) for d in shape), dtype

    def params(self):
        return set().union(*(x.params() for x in self.inputs))


class Unsqueeze(_Op):
    """Unsqueeze(x, axes) (axes normalised, sorted). Axis 0 among them: one slice, x itself."""

    def __init__(self, x: Lazy, axes: list):
        shape = list(x.shape)
        for a in axes:
            shape.insert(a, 1)
        super().__init__([x], shape, x.dtype)
        self.axes = axes

    def rows(self, e):
        x = self.inputs[0]
        if 0 in self.axes:  # (1, ...) : the only slice is x with the other new axes
            return np.expand_dims(x.value(), tuple(a - 1 for a in self.axes if a))
        return np.expand_dims(x.rows(e), tuple(a - 1 for a in self.axes))


class Concat(_Op):
    """Concat(inputs, axis): along axis 0, slice e comes from the input covering it; along another
    axis, slice e concatenates the inputs' slices e."""

    def __init__(self, inputs: list, axis: int):
        shape = list(inputs[0].shape)
        shape[axis] = sum(x.shape[axis] for x in inputs)
        super().__init__(inputs, shape, inputs[0].dtype)
        self.axis = axis

    def rows(self, e):
        if self.axis:
            return np.concatenate([x.rows(e) for x in self.inputs], axis=self.axis - 1)
        for x in self.inputs:
            if e < x.shape[0]:
                return x.rows(e)
            e -= x.shape[0]
        raise IndexError(e)


class Reshape(_Op):
    """Reshape(x, target) keeping axis 0 (target[0] is 0 or x's first dim): slice e reshaped."""

    def __init__(self, x: Lazy, target: list):
        target = [x.shape[k] if d == 0 else int(d) for k, d in enumerate(target)]
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            target[target.index(-1)] = int(np.prod(x.shape)) // known
        super().__init__([x], target, x.dtype)

    def rows(self, e):
        return self.inputs[0].rows(e).reshape(self.shape[1:])


class Transpose(_Op):
    """Transpose(x, perm) keeping axis 0 first (perm[0] == 0): slice e transposed by perm[1:] - 1."""

    def __init__(self, x: Lazy, perm: list):
        super().__init__([x], [x.shape[p] for p in perm], x.dtype)
        self.perm = [p - 1 for p in perm[1:]]

    def rows(self, e):
        return self.inputs[0].rows(e).transpose(self.perm)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _sliced(node, ins: list) -> Lazy:
    """The Lazy for `node` over Lazy inputs `ins`; EdgeportError when it cannot be sliced along axis 0."""
    op, attrs = node.op_type, _attrs(node)
    rank = len(ins[0].shape)
    if op == "Unsqueeze":
        axes = attrs["axes"] if "axes" in attrs else ins[1].value().tolist()
        out_rank = rank + len(axes)
        return Unsqueeze(ins[0], sorted(a % out_rank for a in axes))
    if op == "Concat":
        return Concat(ins, attrs["axis"] % rank)
    if op == "Reshape":
        target = ins[1].value().tolist()
        if target[0] in (0, ins[0].shape[0]) and ins[0].shape[0] > 0:
            return Reshape(ins[0], target)
    if op == "Transpose":
        perm = attrs.get("perm", list(range(rank))[::-1])
        if perm[0] == 0:
            return Transpose(ins[0], perm)
    raise EdgeportError(f"--streaming cannot fold {op} node '{node.name}' over the weights slice by slice; "
                        "export without --streaming")


def _evaluate(node, feeds: dict) -> Const:
    """A one-output node over small inputs ({input name: Const}) computed whole (onnx.reference)."""
    from onnx.reference import ReferenceEvaluator

    return Const(ReferenceEvaluator(node).run(None, {name: x.value() for name, x in feeds.items()})[0])


def _linear_transpose(node, params: dict) -> bool:
    """Transpose(perm [1, 0]) of one 2-D parameter: streaming.weight_plan's pattern, not folded here."""
    return (node.op_type == "Transpose" and node.input[0] in params and params[node.input[0]].dim() == 2
            and _attrs(node).get("perm", [1, 0]) == [1, 0])


def fold_weight_subgraphs(proto, params: dict) -> list:
    """Remove from `proto` (onnx.ModelProto from streaming.trace_graph, weights as graph inputs named by
    parameter) every node computed from parameters and constants alone; -> [(tensor name, Lazy)] for the
    results the remaining graph reads, to be written as initializers (write_folded). Parameter graph
    inputs only folded nodes read are removed; the others stay for streaming.weight_plan.
    Raises EdgeportError for an op over weights that SLICED does not cover."""
    from onnx import numpy_helper

    known = {n.output[0]: _evaluate(n, {}) for n in proto.graph.node if n.op_type == "Constant"}
    known.update((t.name, Const(numpy_helper.to_array(t))) for t in proto.graph.initializer)
    inputs = {i.name for i in proto.graph.input}
    folded, kept = {}, []
    for node in proto.graph.node:
        ins = [n for n in node.input if n]
        lazy = [folded[n] if n in folded else Param(n, params[n]) if n in params and n in inputs else known.get(n)
                for n in ins]
        if node.op_type == "Constant" or len(node.output) != 1 or any(x is None for x in lazy) \
                or _linear_transpose(node, params) or not any(n in folded or n in params for n in ins):
            kept.append(node)
            continue
        if node.op_type == "Shape":
            folded[node.output[0]] = Const(np.array(lazy[0].shape, np.int64))
        elif all(isinstance(x, Const) for x in lazy):  # shape arithmetic: no parameter read
            folded[node.output[0]] = _evaluate(node, dict(zip(ins, lazy)))
        else:
            folded[node.output[0]] = _sliced(node, lazy)
    read = {n for node in kept for n in node.input} | {o.name for o in proto.graph.output}
    del proto.graph.node[:]
    proto.graph.node.extend(n for n in kept if n.op_type != "Constant" or n.output[0] in read)
    still = {n for node in proto.graph.node for n in node.input}
    for k in reversed(range(len(proto.graph.input))):
        name = proto.graph.input[k].name
        if name in params and name not in still:
            del proto.graph.input[k]
    return [(name, lazy) for name, lazy in folded.items() if name in read]


def write_folded(proto, f, data_path, folded: list, release, progress=None, done: int = 0, total: int = 0) -> int:
    """Append each folded (name, Lazy) to the open external-data file `f` (streaming.append_tensor), one
    slice along axis 0 at a time, releasing (`release(param name)`) the mapped pages of the parameters it
    reads after each slice. `progress(done, total)` after each tensor. -> done + bytes of fp32 written."""
    from onnx import helper

    from edgeport.export.streaming import append_tensor

    for name, lazy in folded:
        def slices(lazy=lazy):
            for e in range(lazy.shape[0] if lazy.shape else 1):
                part = np.ascontiguousarray(lazy.rows(e) if lazy.shape else lazy.value())
                yield memoryview(part).cast("B")
                del part
                for p in lazy.params():
                    release(p)
        dtype = helper.np_dtype_to_tensor_dtype(np.dtype(lazy.dtype))
        append_tensor(proto, f, data_path, name, list(lazy.shape), dtype, lazy.nbytes, slices())
        done += lazy.nbytes
        if progress is not None:
            progress(done, total)
    return done
