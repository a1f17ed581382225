"""What `edgeport list` offers must export: every family x task x target it shows, with the tiny preset.

Fast: every offered (family, task) builds its reference and export contract and runs a forward pass on
the contract's sample inputs (a task `list` shows that the export stage would refuse fails here).
Slow (`pytest -m slow`, 192 exports, ~20 min on this 2-core machine): the full walk, each
offer exported with its tiny preset; the export itself checks parity against the reference over the
target's grid (ParityError on a miss).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from edgeport.cli import offered_targets
from edgeport.export import export
from edgeport.export.contracts import contract_for
from edgeport.reference_models import families, load_reference


def tiny(fam) -> str:
    """The family's `-tiny` preset (every family has one: tests rely on it)."""
    names = [p for p in fam.presets if p.endswith("-tiny")]
    assert names, f"family {fam.name} has no -tiny preset"
    return names[0]


# Tasks whose family's `-tiny` preset cannot build them, and the preset `edgeport list` shows for them.
TASK_PRESETS = {("mega", "causal-lm"): "mega-decoder-tiny"}  # causal-lm needs a decoder config


def offers() -> list:
    """[(family, tiny preset, task, target)] in `edgeport list` order."""
    return [(name, TASK_PRESETS.get((name, task), tiny(fam)), task, target) for name, fam in sorted(families().items())
            for task in fam.tasks for target in offered_targets(name, fam)]


def offered_tasks() -> list:
    return sorted({(name, preset, task) for name, preset, task, _ in offers()})


def load(preset: str, task: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weight presets warn
        return load_reference(preset, task)


def test_list_shows_every_offer(capsys):
    """`edgeport list` prints the targets offered_targets gives (the walk below covers what users see)."""
    from edgeport.cli import main

    main(["list"])
    blocks, name = {}, None
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith(" "):
            name = line.strip()
        blocks.setdefault(name, []).append(line.strip())
    for name, fam in families().items():
        targets = next(ln for ln in blocks[name] if ln.startswith("targets:"))
        shown = [t.split(" (")[0].strip() for t in targets.split(":", 1)[1].split(";")[0].split(",")]
        assert shown == offered_targets(name, fam), name
        assert f"tasks:   {', '.join(fam.tasks)} (default {fam.default_task})" in blocks[name]


@pytest.mark.parametrize("family,preset,task", offered_tasks())
def test_offered_task_has_a_contract(family, preset, task):
    """Reference and export contract build; the reference runs on the contract's sample inputs with the
    contract's output names and ranks."""
    ref = load(preset, task)
    contract = contract_for(ref)
    with torch.inference_mode():
        outs = ref.model(*contract.sample_args())
    assert len(outs) == len(contract.output_names)
    for name, out in zip(contract.output_names, outs):
        assert torch.isfinite(out).all(), (name, task)


@pytest.mark.slow
@pytest.mark.parametrize("family,preset,task,target", offers())
def test_offer_exports(family, preset, task, target, tmp_path):
    """The offer exports (parity over the target's grid is checked inside export: ParityError on a miss),
    and its manifest lists exactly the inputs the artifact's graph (ONNX) or every signature (LiteRT) takes."""
    import json

    from test_manifest_faults import litert_signatures, onnx_graph_inputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export(preset, target, task=task, out_dir=tmp_path / "out", quiet=True)
    m = json.loads((out / "edgeport.json").read_text())
    names = sorted(s["name"] for s in m["inputs"])
    if m["artifact"].endswith(".tflite"):
        assert all(sorted(ins) == names for ins in litert_signatures(out / m["artifact"]).values())
    else:
        assert [s["name"] for s in m["inputs"]] == [n for n, _, _ in onnx_graph_inputs(out / m["artifact"])]
