"""The runtime LUKE / mLUKE tokenizer against transformers 4.57.6's LukeTokenizer / MLukeTokenizer.

Golden ids: tests/golden/luke/cases.json, made by scripts/make_luke_golden.py from a sentencepiece BPE
model, a byte-level BPE and entity vocabularies that script builds (saved next to the cases).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.runtime.luke_tokenizer import LukeTokenizer

GOLDEN = Path(__file__).parent / "golden" / "luke"
CASES = json.loads((GOLDEN / "cases.json").read_text(encoding="utf-8"))
BEY = "Beyoncé lives in Los Angeles."


def tokenizer(family: str, task=None, **init) -> LukeTokenizer:
    return LukeTokenizer.from_folder(GOLDEN / family, task=task, **init)


def run(tok: LukeTokenizer, call: dict) -> dict:
    kw = dict(call)
    text, pair = kw.pop("text"), kw.pop("text_pair", None)
    padding = kw.pop("padding", None)
    padding = "longest" if padding is True else padding
    if isinstance(text, list):
        return {k: v.tolist() for k, v in tok(text, pair, padding=padding or "longest", **kw).items()}
    row = tok.encode(text, pair, **kw)
    if padding:
        arrays = tok.pad([row], padding, kw.get("max_length"), kw.get("max_entity_length"))
        return {k: v[0].tolist() for k, v in arrays.items()}
    return row


def test_golden_table_covers_the_modes():
    tasks = {c["task"] for c in CASES}
    assert tasks == {None, "entity_classification", "entity_pair_classification", "entity_span_classification"}
    assert {c["family"] for c in CASES} == {"luke", "mluke"}
    assert json.loads((GOLDEN / "VERSIONS.json").read_text())["transformers"] == "4.57.6"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_ids_match_transformers_457(case):
    tok = tokenizer(case["family"], case["task"], **case["init"])
    got = run(tok, case["call"])
    assert sorted(got) == sorted(case["expected"]), "output names differ"
    for key, want in case["expected"].items():
        assert got[key] == want, f"{key}: got {got[key]}, want {want}"


def test_markers_are_the_entity_tokens_not_bos():
    """The reported transformers 5.x bug put <s> where <ent> goes. Here the marker is <ent>'s own id."""
    tok = tokenizer("mluke", "entity_classification")
    ids = tok.encode(BEY, entity_spans=[(0, 7)])["input_ids"]
    assert ids.count(tok.ent1_id) == 2 and ids.count(tok.cls_id) == 1 and tok.ent1_id != tok.cls_id


@pytest.mark.parametrize("family", ["mluke", "luke"])
@pytest.mark.parametrize("task, kwargs, message", [
    ("none", dict(entity_spans=[(0, 40)]), "outside the text"),
    ("none", dict(entity_spans=[(-1, 3)]), "outside the text"),
    ("none", dict(entity_spans=[(5, 5)]), "empty or reversed"),
    ("none", dict(entity_spans=[(7, 2)]), "empty or reversed"),
    ("none", dict(entity_spans=[(0, "7")]), r"not a \(start, end\) pair"),
    ("none", dict(entity_spans=[(0, 7)], entities=["a", "b"]), "one entity name per span"),
    ("entity_classification", dict(entity_spans=[(0, 7), (17, 28)]), "exactly one"),
    ("entity_classification", dict(entity_spans=[]), "exactly one"),
    ("entity_pair_classification", dict(entity_spans=[(0, 7)]), "exactly two"),
    ("entity_pair_classification", dict(entity_spans=[(17, 28), (21, 28)]), "overlap"),
    ("entity_pair_classification", dict(entity_spans=[(0, 12), (8, 20)]), "overlap"),
    ("entity_span_classification", dict(entity_spans=[]), "at least one"),
    ("entity_classification", dict(entity_spans=[(0, 7)], entities=["Beyoncé"]), "task mode 'none'"),
])
def test_bad_spans_are_refused(family, task, kwargs, message):
    with pytest.raises(EdgeportError, match=message):
        tokenizer(family, task).encode(BEY, **kwargs)


def test_pair_text_is_refused_in_entity_modes():
    with pytest.raises(EdgeportError, match="one text"):
        tokenizer("luke", "entity_classification").encode(BEY, "a pair", entity_spans=[(0, 7)])


def test_batch_needs_spans_on_every_row_or_none():
    with pytest.raises(EdgeportError, match="every row"):
        tokenizer("mluke")([BEY, BEY], entity_spans=[[(0, 7)], None])


def test_padding_shorter_than_a_row_is_refused():
    tok = tokenizer("luke")
    with pytest.raises(EdgeportError, match="longer than the padded length"):
        tok(BEY, entity_spans=[(0, 7)], padding="max_length", max_length=4)


def test_batch_arrays_have_the_model_shapes():
    tok = tokenizer("mluke", "entity_span_classification", max_mention_length=5)
    out = tok([BEY, "Tokyo is in Japan."], entity_spans=[[(0, 7), (17, 28)], [(0, 5)]])
    assert out["input_ids"].dtype == np.int64
    B, S = out["input_ids"].shape
    assert out["entity_position_ids"].shape == (2, 2, 5)
    assert out["entity_position_ids"][1, 1].tolist() == [-1] * 5  # the padded entity
    assert (out["entity_position_ids"] < S).all()
    assert out["entity_end_positions"].shape == (B, 2)


def test_tokenizer_is_torch_free():
    import subprocess
    import sys

    code = ("import sys; from edgeport.runtime.luke_tokenizer import LukeTokenizer; "
            f"LukeTokenizer.from_folder({str(GOLDEN / 'mluke')!r}, task='entity_classification')"
            "('Tokyo is big.', entity_spans=[(0, 5)]); "
            f"LukeTokenizer.from_folder({str(GOLDEN / 'luke')!r})('Tokyo is big.', entity_spans=[(0, 5)]); "
            "bad = [m for m in ('torch', 'tensorflow', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
