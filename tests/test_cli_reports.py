"""What the CLI tells the user (issue 16, part 3): `inspect` prints the per-check parity report the README
promises, the export says which lowering it used, and `list` names every lowering `--lowering` accepts
(`folded` included); a name it does not list is refused.
"""

import pytest

from edgeport.cli import main
from edgeport.errors import EdgeportError
from edgeport.manifest import read_manifest


@pytest.fixture(scope="module")
def bert_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "bert"
    assert main(["export", "--model", "bert-tiny", "--task", "text-classification", "-o", str(out)]) == 0
    return out


def test_export_says_which_lowering(tmp_path, capsys):
    assert main(["export", "--model", "bert-tiny", "--task", "text-classification", "-o", str(tmp_path / "g"),
                 "--lowering", "generic"]) == 0
    assert "lowering 'generic' (named)" in capsys.readouterr().err
    assert read_manifest(tmp_path / "g")[0].converter["lowering"] == "generic"


def test_inspect_prints_every_parity_check(bert_export, capsys):
    capsys.readouterr()
    assert main(["inspect", str(bert_export)]) == 0
    out = capsys.readouterr().out
    m, _ = read_manifest(bert_export)
    rows = [line.split() for line in out.splitlines() if line.startswith("    logits ")]
    assert len(rows) == len(m.parity) >= 2
    for row, check in zip(rows, m.parity):
        assert float(row[-3]) == pytest.approx(check.max_abs_diff, rel=1e-2) and row[-1] == "pass"
    assert f"lowering: {m.converter['lowering']}" in out


def test_list_names_every_lowering_export_accepts(capsys):
    from edgeport.cli import offered_targets
    from edgeport.export.lowerings import lowerings_for
    from edgeport.reference_models import families

    capsys.readouterr()
    main(["list"])
    blocks = capsys.readouterr().out.split("\n")
    for name, fam in families().items():
        line = next((blocks[i + 4] for i, b in enumerate(blocks) if b == name), "")
        for t in offered_targets(name, fam):
            for low in lowerings_for(name, t):
                assert f"{t}: " in line and low in line.split(f"{t}: ")[1].split(";")[0], (name, t, low)
    deberta = next(blocks[i + 4] for i, b in enumerate(blocks) if b == "deberta-v2")
    assert "tflite: default, folded, generic" in deberta


def test_unlisted_lowering_is_refused():
    from edgeport.export.lowerings import find_lowering

    with pytest.raises(EdgeportError):
        find_lowering("bert", "tflite", "folded")


@pytest.fixture(scope="module")
def decoder_exports(tmp_path_factory):
    """gpt2-tiny exported with the per-layer KV cache (the ONNX default), and its int4 quantization."""
    from edgeport.quantize import quantize_artifact

    root = tmp_path_factory.mktemp("dec")
    assert main(["export", "--model", "gpt2-tiny", "--kv-layout", "per-layer", "-o", str(root / "f"), "-q"]) == 0
    return root / "f", quantize_artifact(root / "f", "int4", out_dir=root / "q", quiet=True)


def test_inspect_of_a_per_layer_decoder_aligns_its_columns(decoder_exports, capsys):
    """Names as long as past_key_values.1.value keep the dtype and shape columns aligned, and the cache's
    parity rows carry the per-layer output names (present.*.key), not the stacked ones the graph lacks."""
    capsys.readouterr()
    assert main(["inspect", str(decoder_exports[0])]) == 0
    out = capsys.readouterr().out
    io = [line for line in out.splitlines() if line.startswith(("  input ", "  output "))]
    m, _ = read_manifest(decoder_exports[0])
    assert len(io) == len(m.inputs) + len(m.outputs) and any("past_key_values.1.value" in line for line in io)
    assert len({line.index(" float32 " if " float32 " in line else " int64 ") for line in io}) == 1, io
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and "pass" in line]
    assert {"present.*.key", "present.*.value", "logits"} == set(rows) and len(rows) == len(m.parity)
    assert "present_keys" not in out
    assert "    output               [batch, past, new] padded" in out  # decoders record the cache step


def test_inspect_of_an_int4_decoder_shows_its_accuracy(decoder_exports, capsys):
    """A quantized export carries its float export's parity checks: inspect labels them so and shows the
    quantized artifact's own accuracy against the float one (what `edgeport quantize` measured)."""
    capsys.readouterr()
    assert main(["inspect", str(decoder_exports[1])]) == 0
    out = capsys.readouterr().out
    m, _ = read_manifest(decoder_exports[1])
    acc = m.quantization["accuracy"]
    assert "parity of the float export, against the reference: pass" in out
    line = next(x for x in out.splitlines() if x.startswith(f"  accuracy ({m.quantization['tag']} vs float"))
    assert f"perplexity {acc['perplexity_float']:.3f} -> {acc['perplexity_quantized']:.3f}" in line
    assert f"agreement {acc['greedy_next_token_agreement']:.1%}" in line
    assert not any(x.startswith("    logits ") for x in out.splitlines())  # the float rows stay with the float export


def test_quantize_says_what_the_accuracy_was_measured_on(decoder_exports, tmp_path, capsys):
    """gpt2-tiny has random weights: its perplexity is scored on random token ids, and the progress lines say
    so, as the manifest and inspect do (they said 'on held-out text' / 'held-out perplexity')."""
    capsys.readouterr()
    assert main(["quantize", str(decoder_exports[0]), "--scheme", "int8", "-o", str(tmp_path / "q8")]) == 0
    err = capsys.readouterr().err
    m, _ = read_manifest(tmp_path / "q8")
    on = m.quantization["accuracy"]["text"]
    assert on == "random token ids (random weights)"
    assert "held-out" not in err and f"tokens of {on}" in err, err
    assert main(["inspect", str(tmp_path / "q8")]) == 0
    assert f"vs float, on {on}): perplexity" in capsys.readouterr().out


def test_encoder_accuracy_headline_names_its_inputs():
    """evaluate.headline: held-out text is called so; random token ids (no tokenizer) are not."""
    from edgeport.quantize.evaluate import headline

    rep = {"texts": 24, "max_abs_diff": 0.5, "argmax_agreement": 1.0}
    random_ids = headline({**rep, "text": "random token ids (the export has no tokenizer)"})
    assert random_ids.startswith("on 24 inputs of random token ids (the export has no tokenizer): max_abs_diff 0.5")
    assert "held-out" not in random_ids
    assert headline({**rep, "text": "pydoc_data.topics (evaluation half)"}).startswith(
        "on 24 held-out texts (pydoc_data.topics (evaluation half)): max_abs_diff 0.5, argmax_agreement 1")
