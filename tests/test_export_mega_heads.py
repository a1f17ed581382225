"""MEGA's multiple-choice and causal-lm heads exported (ONNX, TFLite) and run on the golden inputs of
transformers 4.57.6 (scripts/make_mega_golden.py): the artifact against the old release's own outputs.

causal-lm is full-sequence logits (B, L, V), no KV cache: MEGA's decoder state is the EMA recurrence
plus chunked attention, which the stacked key/value cache contract of the other decoders does not hold.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from edgeport.export import export
from edgeport.manifest import read_manifest
from edgeport.runtime.session import open_session

GOLDEN = Path(__file__).parent / "golden" / "mega"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")

pytestmark = pytest.mark.usefixtures("one_thread")


def golden(case: str) -> dict:
    with np.load(GOLDEN / case / "golden.npz") as g:
        return {k: g[k] for k in g.files}


def run_on_golden(out: Path, g: dict, length: int, dtype=np.int64) -> np.ndarray:
    m, _ = read_manifest(out)
    session = open_session(out / m.artifact)
    names = [s.name for s in m.inputs]
    return session.run({n: g[f"{n}_{length}"].astype(dtype) for n in INPUTS if n in names})["logits"]


def exported(case: str, task: str, target: str, out: Path, **kw) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export(str(GOLDEN / case), target, task=task, out_dir=out, quiet=True, **kw)


@pytest.mark.parametrize("case,task", [("encoder-multiple-choice-chunked", "multiple-choice"),
                                       ("decoder-causal-lm-chunked-dense", "causal-lm"),
                                       ("decoder-causal-lm-rotary-untied", "causal-lm")])
def test_onnx_on_golden(case, task, tmp_path):
    g = golden(case)
    assert str(g["task"]) == task
    out = exported(case, task, "onnx", tmp_path / "out")
    for length in g["lengths"]:
        want = g[f"logits_{int(length)}"]
        got = run_on_golden(out, g, int(length))
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), (case, int(length))


@pytest.mark.parametrize("case,task,batch", [("decoder-causal-lm-chunked-dense", "causal-lm", 3),
                                             ("encoder-multiple-choice-chunked", "multiple-choice", 2)])
def test_tflite_on_golden(case, task, batch, tmp_path):
    """Static (batch, 12): the golden batch at its longer length (multiple-choice: static 2 choices, the
    first two of each question's three; each choice's score depends on its own row only)."""
    g = golden(case)
    out = exported(case, task, "tflite", tmp_path / "out", batch=batch, seq_len=12)
    want = g["logits_12"]
    if task == "multiple-choice":
        g = {k: v[:, :2] if k.endswith("_12") and v.ndim == 3 else v for k, v in g.items()}
        want = want[:, :2]
    got = run_on_golden(out, g, 12, np.int32)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
