"""Every preset export runs in `edgeport run` / `generate` (issue 16, part 3): presets get a byte-level
tokenizer fit to their vocabulary (edgeport/reference_models/preset_tokenizer.py).
"""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from tokenizers import Tokenizer

from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.manifest import read_manifest
from edgeport.reference_models import families
from edgeport.reference_models.preset_tokenizer import byte_level_tokenizer
from edgeport.runtime import pipeline

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "Héllo wörld, 東京 🙂 tabs\tand  spaces"


@pytest.mark.parametrize("encoder, pad", [(True, 0), (True, 1), (False, 0)])
def test_byte_tokenizer_round_trips_and_fits_the_vocabulary(encoder, pad):
    tok = byte_level_tokenizer(300, encoder, pad)
    enc = tok.encode(TEXT)
    assert max(enc.ids) < 300 and tok.get_vocab_size() == 300
    assert tok.decode(enc.ids, skip_special_tokens=True) == TEXT
    assert tok.token_to_id("[PAD]" if encoder else "<|endoftext|>") == pad
    if encoder:
        assert enc.ids[0] == tok.token_to_id("[CLS]") and enc.ids[-1] == tok.token_to_id("[SEP]")
        assert len(enc.ids) == len(TEXT.encode()) + 2  # one token per UTF-8 byte


def test_too_small_vocabulary_is_refused():
    with pytest.raises(EdgeportError, match="too small"):
        byte_level_tokenizer(200, True)


# Fast: the presets of the reported faults (no tokenizer before); the rest of the list runs in the slow suite.
FAST = {"convbert-tiny", "gpt2-tiny", "mega-tiny"}
TINY = [pytest.param(p, marks=() if p in FAST else pytest.mark.slow) for p in sorted(
    p for f in families().values() for p in f.presets if p.endswith("-tiny") and not p.startswith("luke"))]


@pytest.mark.parametrize("preset", TINY)
def test_preset_export_runs(preset, tmp_path):
    """Default task of each family's tiny preset: exported, then run through its pipeline or generate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export(preset, target="onnx", out_dir=tmp_path / "e", quiet=True)
    m, _ = read_manifest(out)
    assert m.tokenizer is not None and m.random_weights
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size() <= json.loads((out / "edgeport.json").read_text()).get("outputs")[0]["shape"][-1] \
        or m.task != "fill-mask"
    if m.task == "text-generation":
        from edgeport.runtime.generate import TextGenerator

        text = TextGenerator(out).generate("Once upon a time", max_new_tokens=5)
        assert isinstance(text, str)
        return
    p = pipeline(out)
    if m.task == "fill-mask":
        cands = p("Paris is the [MASK] of France.", top_k=3)
        assert len(cands) == 3 and all(0 <= c["score"] <= 1 for c in cands)
    elif m.task == "feature-extraction":
        assert np.isfinite(p("a sentence")).all()
    else:
        pytest.fail(f"default task {m.task} not covered here")


def test_readme_mistral_snippet_generates(tmp_path):
    """The reported fault: `TextGenerator("out/mistral")` on the README's mistral-tiny export ended in a traceback."""
    r = subprocess.run([sys.executable, "-m", "edgeport.cli", "export", "--model", "mistral-tiny", "--target", "onnx",
                        "-q", "-o", str(tmp_path / "mistral")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "edgeport.cli", "generate", str(tmp_path / "mistral"), "--prompt",
                        "Once upon a time", "--max-new-tokens", "8"], capture_output=True, text=True)
    assert r.returncode == 0 and "random weights" in r.stderr and "Traceback" not in r.stderr
