"""MEGA reference vs golden outputs of transformers 4.57.6 (5.x has no MEGA).

The golden folders come from scripts/make_mega_golden.py: tiny HF models with seeded random weights,
saved with save_pretrained, and their outputs on batches with padded rows at two lengths.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeport.reference_models import load_reference
from edgeport.reference_models.heads import TASK_HEADS
from edgeport.reference_models.registry import get_family

GOLDEN = Path(__file__).parent / "golden" / "mega"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "golden.npz").is_file())
ATOL = 1e-4
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def golden(case: str) -> dict:
    with np.load(GOLDEN / case / "golden.npz") as g:
        return {k: g[k] for k in g.files}


def load(name: str, task: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weight presets warn
        return load_reference(name, task).model


def run(model, g: dict, length: int) -> tuple:
    feeds = [torch.from_numpy(g[f"{k}_{length}"]) for k in INPUTS]
    if feeds[0].dim() == 3 and not model.head.choices:  # the backbone of a multiple-choice case: (B*C, L) rows
        feeds = [f.flatten(0, 1) for f in feeds]
    with torch.no_grad():
        return model(*feeds)


def expected(g: dict, task: str, length: int) -> list:
    names = ("last_hidden_state",) if task == "feature-extraction" else TASK_HEADS[task].outputs
    return [g[f"{n}_{length}"] for n in names]


def max_diff(got, want) -> float:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert tuple(a.shape) == b.shape, (tuple(a.shape), b.shape)
    return max(float(np.abs(a.numpy() - b).max()) for a, b in zip(got, want))


def test_golden_comes_from_the_old_release():
    versions = json.loads((GOLDEN / "VERSIONS.json").read_text())
    assert versions["transformers"] == "4.57.6"
    assert len(CASES) >= 6
    tasks = {str(golden(c)["task"]) for c in CASES} | {"feature-extraction"}
    assert tasks == set(get_family("mega").tasks)  # every task's head is checked against HF somewhere
    size = sum(f.stat().st_size for f in GOLDEN.rglob("*") if f.is_file())
    assert size < 1_000_000


@pytest.mark.parametrize("head", [False, True], ids=["backbone", "head"])
@pytest.mark.parametrize("case", CASES)
def test_matches_transformers_4_57(case, head):
    g = golden(case)
    task = str(g["task"]) if head else "feature-extraction"
    model = load(str(GOLDEN / case), task)
    for length in g["lengths"]:
        diff = max_diff(run(model, g, int(length)), expected(g, task, int(length)))
        assert diff <= ATOL, f"{case} {task} L={length}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("case", CASES)
def test_golden_sees_padding_and_weights(case):
    """The comparison can fail: a model that ignores padding, or has one EMA weight off, misses."""
    g = golden(case)
    model = load(str(GOLDEN / case), "feature-extraction")
    length = int(g["lengths"][-1])
    g_nomask = dict(g, **{f"attention_mask_{length}": np.ones_like(g[f"attention_mask_{length}"])})
    assert max_diff(run(model, g_nomask, length), expected(g, "feature-extraction", length)) > 10 * ATOL
    with torch.no_grad():
        model.mega.layers[0].mega_layer.ema_gate.decay_factor.add_(0.05)
    assert max_diff(run(model, g, length), expected(g, "feature-extraction", length)) > 10 * ATOL


def test_presets_build():
    fam = get_family("mega")
    assert {"mega", "mega-tiny"} <= set(fam.presets)
    model = load("mega-tiny", "fill-mask")
    ids = torch.randint(3, 1024, (2, 9))
    (logits,) = model(ids, torch.ones_like(ids))
    assert logits.shape == (2, 9, 1024) and torch.isfinite(logits).all()


def export_onnx(model, path: Path, length: int):
    ids = torch.randint(3, 60, (2, length))
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    axes = {0: "batch", 1: "sequence"}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(model, (ids, mask, torch.zeros_like(ids)), str(path), dynamo=False, opset_version=17,
                      input_names=names, output_names=["out"], dynamic_axes={n: axes for n in names + ["out"]})


@pytest.mark.parametrize("case", ["mega-tiny", "encoder-layernorm-simple-chunked",
                                  "decoder-scalenorm-simple-chunked-laplace"])
def test_onnx_export_runs_at_another_length(case, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    name = case if case.startswith("mega") else str(GOLDEN / case)
    model = load(name, "feature-extraction")
    export_onnx(model, tmp_path / "mega.onnx", length=8)
    sess = ort.InferenceSession(str(tmp_path / "mega.onnx"), providers=["CPUExecutionProvider"])
    for length in (12, 5):
        ids = torch.randint(3, 60, (3, length))
        mask = torch.ones_like(ids)
        mask[1, length // 2:] = 0
        feed = {f"{k}_{length}": v.numpy() for k, v in zip(INPUTS, (ids, mask, torch.zeros_like(ids)))}
        (want,) = run(model, feed, length)
        graph_inputs = {i.name for i in sess.get_inputs()}  # unused inputs may be pruned
        (got,) = sess.run(None, {k: feed[f"{k}_{length}"] for k in INPUTS if k in graph_inputs})
        assert got.shape == tuple(want.shape)
        diff = float(np.abs(got - want.numpy()).max())
        assert diff <= ATOL, f"{case} L={length}: onnxruntime vs eager max abs diff {diff:.2e}"
