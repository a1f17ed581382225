"""ConvBERT's span convolution sees padding: the manifest and README say so, and the effect is measured
here so the statement stays true (issue 16, part 2). Oracle: transformers 5.23's ConvBertModel.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import VOCAB, perturb, save_hf
from edgeport.export import export
from edgeport.manifest import read_manifest
from edgeport.reference_models import load_reference

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

IDS = [2, 9, 30, 47, 28, 9, 48, 3]  # [CLS] the cat sat on the mat [SEP] in conftest's VOCAB
PADDED_TO = 32


@pytest.fixture(scope="module")
def convbert(tmp_path_factory):
    cfg = transformers.ConvBertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=37, embedding_size=32,
                                      max_position_embeddings=64, conv_kernel_size=9, head_ratio=2)
    torch.manual_seed(0)
    hf = perturb(transformers.ConvBertModel(cfg).eval(), scale=0.2)  # well off the init, as trained
    return hf, save_hf(hf, tmp_path_factory.mktemp("convbert"))


def cosine_padded_vs_unpadded(forward) -> float:
    """Mean-pooled embeddings of IDS alone vs IDS padded to PADDED_TO (attention mask 0 on pads)."""
    n = len(IDS)
    ids = torch.tensor([IDS + [0] * (PADDED_TO - n)])
    mask = torch.tensor([[1] * n + [0] * (PADDED_TO - n)])
    with torch.no_grad():
        alone = forward(torch.tensor([IDS]), torch.ones(1, n, dtype=torch.long))[0].mean(0)
        padded = forward(ids, mask)[0, :n].mean(0)
    return float(torch.nn.functional.cosine_similarity(alone, padded, dim=0))


def test_padding_changes_embeddings_in_ours_and_in_transformers(convbert):
    hf, folder = convbert
    ref = load_reference(str(folder), "feature-extraction")
    ours = cosine_padded_vs_unpadded(lambda i, m: ref.model(i, m, torch.zeros_like(i))[0])
    theirs = cosine_padded_vs_unpadded(lambda i, m: hf(input_ids=i, attention_mask=m).last_hidden_state)
    assert abs(ours - theirs) <= 1e-5  # the same behaviour as transformers: not a bug of ours
    assert ours < 0.995  # a real effect, as the note says (0.984 here; the issue measured 0.982 at length 32)


def test_manifest_and_readme_carry_the_note(convbert, tmp_path):
    _, folder = convbert
    out = export(str(folder), target="onnx", task="feature-extraction", out_dir=tmp_path / "e", quiet=True)
    m, _ = read_manifest(out)
    assert any("span-based convolution sees padding" in n for n in m.notes)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "span convolution sees padding" in readme


def test_other_families_carry_no_padding_note():
    from edgeport.reference_models import families

    assert [n for n, f in families().items() if any("padding" in x for x in f.notes)] == ["convbert"]
