"""Real-size architectures (random weights): opt-in with `pytest -m slow` (minutes each)."""

import pytest

from edgeport.export import export
from edgeport.manifest import read_manifest


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_mobilebert_real_size_qa(tmp_path, target):
    out = export("mobilebert", target=target, task="question-answering", out_dir=tmp_path / target,
                 seq_len=384, quiet=True)
    m, _ = read_manifest(out)
    assert m.parity_passed and m.random_weights
    # 24.6M parameters in fp32; Google's float MobileBERT QA .tflite is 100.5 MB
    assert 95e6 < m.size_bytes < 101e6, m.size_bytes
