"""Streaming export (edgeport/export/streaming.py) against the in-memory export of the same checkpoint.

Both artifacts must hold the same weights byte for byte and compute the same outputs bit for bit in
onnxruntime (same nodes on the same weights; the in-memory graph's folded shape constants are folded
by onnxruntime at load time in the streamed one). Also: no weight inside the streamed model.onnx,
and one-line refusals for what the streaming path does not cover.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import decoder_cache_feeds, save_mistral_checkpoint

from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.export.streaming import INLINE_BYTES, SafetensorsFile
from edgeport.reference_models.mistral import PRESETS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """mistral-tiny with random weights (norms too, so no two tensors are equal) saved as safetensors."""
    return save_mistral_checkpoint(tmp_path_factory.mktemp("mistral-ckpt"), seed=1)


def _weights(path) -> dict:
    """{sha256 of bytes: shape} of every initializer (external data loaded)."""
    proto = onnx.load(str(path), load_external_data=True)
    return {hashlib.sha256(onnx.numpy_helper.to_array(t).tobytes()).hexdigest(): tuple(t.dims)
            for t in proto.graph.initializer}


def _feeds(batch: int, new: int, past: int, seed: int) -> dict:
    return decoder_cache_feeds(PRESETS["mistral-tiny"], batch, new, past, seed)


@pytest.mark.parametrize("lowering", ["default", "generic"])
def test_streaming_matches_in_memory(checkpoint, tmp_path, lowering):
    mem = export(str(checkpoint), "onnx", out_dir=tmp_path / "mem", lowering=lowering, quiet=True)
    st = export(str(checkpoint), "onnx", out_dir=tmp_path / "st", lowering=lowering, quiet=True, streaming=True)

    streamed = _weights(st / "model.onnx")
    in_memory = _weights(mem / "model.onnx")
    n_params = len(SafetensorsFile(checkpoint / "model.safetensors").entries)
    assert len(streamed) == n_params  # every checkpoint tensor once (linear weights transposed)
    assert {h: s for h, s in streamed.items() if h not in in_memory} == {}

    inline = [t.name for t in onnx.load(str(st / "model.onnx"), load_external_data=False).graph.initializer
              if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) >= INLINE_BYTES]
    assert inline == []

    sessions = [ort.InferenceSession(str(f / "model.onnx"), providers=["CPUExecutionProvider"]) for f in (mem, st)]
    for batch, new, past in ((1, 7, 0), (2, 1, 9)) if lowering == "generic" else ((1, 7, 0), (1, 1, 9)):
        feeds = _feeds(batch, new, past, seed=new + past)
        a, b = (s.run(None, feeds) for s in sessions)
        for x, y in zip(a, b):
            assert x.shape == y.shape and np.array_equal(x, y), float(np.max(np.abs(x - y)))

    m_st, m_mem = (json.loads((f / "edgeport.json").read_text()) for f in (st, mem))
    assert m_st["parity_passed"] and len(m_st["parity"]) == len(m_mem["parity"])
    assert "streaming" in m_st["converter"]["exporter"]


def test_streaming_refusals(checkpoint, tmp_path):
    with pytest.raises(EdgeportError, match="preset without weights"):
        export("mistral-tiny", "onnx", out_dir=tmp_path / "a", quiet=True, streaming=True)
    with pytest.raises(EdgeportError, match="in-memory path"):
        export(str(checkpoint), "tflite", out_dir=tmp_path / "b", quiet=True, streaming=True)
    assert not (tmp_path / "b").exists()


def test_weight_estimate_counts_the_checkpoint(checkpoint):
    from edgeport.export.streaming import weight_stats

    header = SafetensorsFile(checkpoint / "model.safetensors").entries
    sizes = [e["data_offsets"][1] - e["data_offsets"][0] for e in header.values()]  # all F32
    assert weight_stats(str(checkpoint), None, None) == (sum(sizes), max(sizes))


def test_preflight_refuses_before_any_work(checkpoint, tmp_path, monkeypatch):
    import edgeport.export.streaming as streaming

    monkeypatch.setattr(streaming, "available_bytes", lambda: 10**8)
    for flag, need in ((True, r"streaming export: about 0\.5 GB needed"), (False, r"in-memory export: about 0\.5 GB needed")):
        with pytest.raises(EdgeportError, match=need + r".* 0\.1 GB available"):
            export(str(checkpoint), "onnx", out_dir=tmp_path / "x", quiet=True, streaming=flag)
    assert not (tmp_path / "x").exists()
    out = export(str(checkpoint), "onnx", out_dir=tmp_path / "y", quiet=True, streaming=True, memory_check=False)
    assert (out / "model.onnx.data").is_file()


def test_streamed_validation_catches_a_misplaced_weight(checkpoint, tmp_path, monkeypatch):
    """The two-pass validation (artifact, then reference) fails an artifact whose layer-1 q_proj holds
    layer 0's weights: ParityError, no output folder."""
    import edgeport.export.streaming as streaming
    from edgeport.errors import ParityError

    real = streaming.weight_plan

    def swapped(proto, params):
        plan = real(proto, params)
        return [(name, src.replace("layers.1.self_attn.q_proj", "layers.0.self_attn.q_proj"), t)
                for name, src, t in plan]

    monkeypatch.setattr(streaming, "weight_plan", swapped)
    with pytest.raises(ParityError, match="logits"):
        export(str(checkpoint), "onnx", out_dir=tmp_path / "bad", quiet=True, streaming=True)
    assert not (tmp_path / "bad").exists()


def test_streamed_manifest_says_how_it_was_validated(checkpoint, tmp_path):
    from edgeport.export.streaming import VALIDATION

    out = export(str(checkpoint), "onnx", out_dir=tmp_path / "st", quiet=True, streaming=True)
    m = json.loads((out / "edgeport.json").read_text())
    assert m["converter"]["validation"] == VALIDATION and "never both in memory at once" in VALIDATION
    assert {c["output"] for c in m["parity"]} == {"logits", "present_keys", "present_values"}
    # the sha256 hashed in the background while validating is that of the files as they lie
    whole = hashlib.sha256((out / "model.onnx").read_bytes() + (out / "model.onnx.data").read_bytes())
    assert m["sha256"] == whole.hexdigest()


def test_background_sha256_equals_hashing_in_one_go(tmp_path):
    """Sha256InBackground gives hashlib's digest of the files' concatenated bytes (blocks of 4 MiB: the
    second file straddles one); cancelled, it reports no digest instead of a wrong one."""
    from edgeport.manifest import Sha256InBackground

    rng = np.random.default_rng(0)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(rng.bytes(1000))
    b.write_bytes(rng.bytes(5 * 2**20 + 3))
    with Sha256InBackground([a, b]) as job:
        assert job.result() == hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()
    job = Sha256InBackground([b] * 64)  # 320 MiB: cancelled well before the end
    job.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        job.result()


def _gpt2_checkpoint(folder):
    """gpt2-tiny with every tensor perturbed, saved as model.safetensors + config.json (its preset dict)."""
    import torch
    from safetensors.torch import save_file

    from edgeport.reference_models import load_reference
    from edgeport.reference_models.gpt2 import PRESETS

    ref = load_reference("gpt2-tiny")
    torch.manual_seed(3)
    sd = {k: (v + 0.1 * torch.randn_like(v)).contiguous() for k, v in ref.model.state_dict().items()}
    save_file(sd, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(PRESETS["gpt2-tiny"]))
    return folder


@pytest.mark.parametrize("family", ["mistral", "mixtral", "gpt2"])
def test_layer_major_reference_is_the_model_chunk_by_chunk(checkpoint, tmp_path, family):
    """The streamed validation's reference pass, one layer at a time over every chunk of every plan, gives
    bit for bit what the whole reference model gives called chunk by chunk (the in-memory path's reference
    calls), on one thread as threads_for runs these few-row chunks; the model's layers are put back."""
    import torch
    from conftest import save_mixtral_checkpoint

    from edgeport.export import streaming_validate as sv
    from edgeport.export.contracts import contract_for
    from edgeport.export.decoders import plans
    from edgeport.export.streaming import load_lazy_reference

    folder = {"mistral": lambda: checkpoint, "mixtral": lambda: save_mixtral_checkpoint(tmp_path, seed=2)[1],
              "gpt2": lambda: _gpt2_checkpoint(tmp_path)}[family]()
    ref = load_lazy_reference(str(folder), None, None)
    contract = contract_for(ref)
    todo = plans(contract, None)
    layers = sv.decoder_layers(ref.model)
    originals = list(layers)
    assert len(originals) == ref.model.backbone.cache_dims[0] > 1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = [sv.reference_chunk_major(ref.model, p, contract) for p in todo]
    finally:
        torch.set_num_threads(before)
    got = sv.reference_layer_major(ref.model, todo, contract, layers)
    assert all(a is b for a, b in zip(layers, originals)) and len(layers) == len(originals)
    assert [len(g) for g in got] == [len(p[2]) for p in todo]
    for plan_got, plan_want in zip(got, want):
        for chunk_got, chunk_want in zip(plan_got, plan_want):
            for a, b in zip(chunk_got, chunk_want):  # logits, keys, values
                assert a.shape == b.shape and np.array_equal(a, b)


def test_progress_never_says_eta_0s_while_bytes_remain():
    """Progress lines: an ETA of at least 1 s while bytes remain (the first ones come within microseconds:
    the ETA from bytes per second would round to 0 s), the time taken once all are written."""
    from edgeport.export.streaming import Progress

    lines = []
    progress = Progress(lines.append)
    total = 10 * 2**20
    for k in range(1, 11):
        progress(k * 2**20, total)
    assert len(lines) >= 5  # about every 10%
    assert all(", ETA " in line and not line.endswith("ETA 0s") for line in lines[:-1]), lines
    assert lines[-1].startswith("written 10 / 10 MiB in ") and "ETA" not in lines[-1]


def test_reference_in_background_gives_the_foreground_pass_and_cancels(checkpoint):
    """ReferenceInBackground (the reference pass run while the weights are written) returns what
    reference_layer_major gives in the foreground, bit for bit; cancelled before it starts a layer it
    raises instead of returning part of the outputs, and the model gets its layers back either way."""
    from edgeport.export import streaming_validate as sv
    from edgeport.export.contracts import contract_for
    from edgeport.export.decoders import plans
    from edgeport.export.streaming import load_lazy_reference

    ref = load_lazy_reference(str(checkpoint), None, None)
    contract = contract_for(ref)
    originals = list(ref.model.backbone.layers)
    want = sv.reference_layer_major(ref.model, plans(contract, None), contract, sv.decoder_layers(ref.model))
    with sv.ReferenceInBackground(ref, contract, None) as job:
        job.start()
        got = job.result()
    assert all(np.array_equal(a, b) for pg, pw in zip(got, want) for cg, cw in zip(pg, pw) for a, b in zip(cg, cw))
    with sv.ReferenceInBackground(ref, contract, None) as job:
        job._stop.set()
        job.start()
        with pytest.raises(RuntimeError, match="cancelled"):
            job.result()
    assert all(a is b for a, b in zip(ref.model.backbone.layers, originals))
    assert sv.ReferenceInBackground(ref, contract, (1, 8)).layers is None  # static shapes: validated as before
