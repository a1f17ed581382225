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
