"""Parity: run the artifact and the reference on the same inputs over a grid of shapes.

Encoders here (`check` over `onnx_grid` / `static_grid`); decoders, whose checks run through the KV
cache, in decoders.py. Artifacts are opened by the runtime (`validation_session`), with the lowering's
custom-op library when its graph holds nodes no stock runtime runs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from edgeport.errors import ParityError
from edgeport.export.contracts import Contract
from edgeport.manifest import ParityCheck


def sample_inputs(contract: Contract, batch: int, seq: int, padded_rows: int, seed: int = 0,
                  choices: int = 2) -> dict:
    """Random token ids; the last `padded_rows` rows are padded (mask 0) over a growing tail.

    Multiple-choice contracts get (batch, choices, seq) inputs: rows are made flat, then reshaped.
    A contract with inputs of its own (export/luke.py's entities) makes them: `contract.sample_inputs`.
    """
    if hasattr(contract, "sample_inputs"):
        return contract.sample_inputs(batch, seq, padded_rows, seed)
    if "choices" in contract.input_dims:
        rows = dataclasses.replace(contract, input_dims=[d for d in contract.input_dims if d != "choices"])
        flat = sample_inputs(rows, batch * choices, seq, padded_rows, seed)
        return {k: v.reshape(batch, choices, seq) for k, v in flat.items()}
    rng = np.random.default_rng(seed + 7919 * batch + seq)
    ids = rng.integers(1, contract.vocab_size, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    for r in range(batch - padded_rows, batch):
        keep = max(1, seq // (2 + r))  # each padded row keeps a different prefix
        mask[r, keep:] = 0
        ids[r, keep:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in contract.inputs:
        types = np.zeros((batch, seq), np.int64)
        types[:, seq // 2:] = min(1, contract.type_vocab_size - 1)
        feeds["token_type_ids"] = types
    return feeds


def reference_outputs(model, contract: Contract, feeds: dict) -> dict:
    """The reference model on numpy feeds -> {output name: float32 array}."""
    with torch.inference_mode():
        outs = model(*[torch.from_numpy(feeds[n]) for n in contract.inputs])
    return {n: o.float().numpy() for n, o in zip(contract.outputs, outs)}


def onnx_grid(contract: Contract) -> list:
    """(batch, seq, padded_rows): batch 1 and 3, short, odd and long sequences, padded rows."""
    lengths = [s for s in (8, 37, 128) if s <= contract.max_positions]
    if contract.max_positions < 128 and contract.max_positions not in lengths:
        lengths.append(contract.max_positions)  # a short table is checked up to its end
    return [(1, s, 0) for s in lengths] + [(3, s, 2) for s in lengths]


def static_grid(batch: int, seq: int) -> list:
    """A static-shape artifact is checked at its one shape, unpadded and with padded rows."""
    return [(batch, seq, 0), (batch, seq, batch)]


def check(model, session, contract: Contract, grid: list, atol=None, rtol=None) -> list:
    """Every output at every grid point; raises ParityError (shape or value) naming the worst miss."""
    atol = contract.atol if atol is None else atol
    rtol = contract.rtol if rtol is None else rtol
    checks = []
    for batch, seq, padded in grid:
        feeds = sample_inputs(contract, batch, seq, padded)
        want = reference_outputs(model, contract, feeds)
        got = session.run(feeds)
        for name in contract.outputs:
            if name not in got:
                raise ParityError(f"artifact has no output '{name}' (it has {', '.join(got)})")
            if got[name].shape != want[name].shape:
                raise ParityError(f"shape mismatch on '{name}' at input {[batch, seq]}: artifact "
                                  f"{list(got[name].shape)}, reference {list(want[name].shape)}")
            diff = float(np.max(np.abs(got[name].astype(np.float64) - want[name])))
            tol = atol + rtol * float(np.max(np.abs(want[name])))
            checks.append(ParityCheck(name, [batch, seq], padded, diff, tol, bool(diff <= tol)))
    return raise_on_misses(checks, "input")


def raise_on_misses(checks: list, shape_label: str) -> list:
    """ParityError naming the worst miss (relative to its tolerance), if any check failed."""
    bad = [c for c in checks if not c.passed]
    if bad:
        w = max(bad, key=lambda c: c.max_abs_diff / c.tolerance)
        raise ParityError(f"artifact differs from the reference: '{w.output}' at {shape_label} {w.shape} "
                          f"({w.padded_rows} padded rows) max abs diff {w.max_abs_diff:.3g} > "
                          f"tolerance {w.tolerance:.3g}; {len(bad)}/{len(checks)} checks failed")
    return checks


def grid_for(contract: Contract, static: tuple | None) -> list:
    """The encoder validation grid: `static_grid(*static)` for a static artifact, else `onnx_grid`."""
    return static_grid(*static) if static else onnx_grid(contract)


def validation_session(path, library=None, threads: int | None = None):
    """The runtime's Session over an artifact file; with `library` (ops.registry.CustomOpLibrary) the
    ONNX graph is prepared in memory (custom nodes moved to the library's domain, kernels registered)
    and run on the CPU with that library. Raises EdgeportError when the runtime cannot load it."""
    from edgeport.runtime.session import OrtSession, open_session

    if library is None:
        return open_session(path, threads=threads)
    import onnx

    proto = onnx.load(str(path))
    library.prepare(proto)
    return OrtSession(proto.SerializeToString(), providers=["CPUExecutionProvider"], threads=threads,
                      custom_op_library=library.library_path())
