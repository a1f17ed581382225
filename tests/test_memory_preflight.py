"""The memory preflight (export/streaming.py: preflight) on every export path, and allocation failures.

Every route (onnx, tensorrt, tflite, --target auto, --quantize auto) must refuse with one line before
loading when the estimate exceeds the available memory (the reading is patched small here, as in
tests/test_export_streaming.py); the refusal suggests --streaming only where it applies; a torch
allocation failure while loading is a one-line EdgeportError, not a traceback.
"""

from __future__ import annotations

import json

import pytest
import torch

from edgeport import reference_models
from edgeport.cli import main
from edgeport.errors import EdgeportError
from edgeport.export import export, streaming
from edgeport.export.auto import export_auto
from edgeport.reference_models.mistral import PRESETS


def _never_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the memory check refused")


@pytest.fixture
def small_machine(monkeypatch):
    """0.1 GB available, and loading a reference fails the test."""
    monkeypatch.setattr(streaming, "available_bytes", lambda: 10**8)
    monkeypatch.setattr(reference_models, "load_reference", _never_load)


@pytest.fixture
def mistral_folder(tmp_path):
    """A mistral-tiny checkpoint folder: config.json and a model.safetensors (the preflight reads only the
    config; the file makes it a folder --streaming accepts)."""
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps(PRESETS["mistral-tiny"]))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_tflite_export_of_a_preset_is_refused_before_loading(small_machine, tmp_path):
    with pytest.raises(EdgeportError, match=r"in-memory export \(tflite route\): about 145\.3 GB needed "
                                            r"\(5\.0x 28\.97 GB .* 0\.1 GB available; export it on a machine") as e:
        export("mistral-7b", "tflite", out_dir=tmp_path / "x", quiet=True)
    assert "--streaming" not in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("target", ["auto", "onnx", "tflite"])
def test_auto_export_is_refused_before_loading(small_machine, monkeypatch, tmp_path, target):
    monkeypatch.setattr("edgeport.export.auto.load", _never_load)
    with pytest.raises(EdgeportError, match=r"about 145\.3 GB needed .* 0\.1 GB available") as e:
        export_auto("mistral-7b", target=target, out_dir=tmp_path / "x", quiet=True)
    assert ("(auto: its most expensive candidate)" in str(e.value)) == (target == "auto")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("flags", [["--target", "tflite"], ["--target", "auto"],
                                   ["--target", "onnx", "--quantize", "auto"], ["--target", "tensorrt"]])
def test_cli_refuses_every_route_in_one_line(small_machine, monkeypatch, tmp_path, capsys, flags):
    monkeypatch.setattr("edgeport.export.auto.load", _never_load)
    assert main(["export", "--model", "mistral-7b", "-o", str(tmp_path / "x"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeport: error: not enough memory for the in-memory export") and err.count("\n") == 1
    assert "--streaming" not in err and "--no-memory-check" in err


def test_streaming_is_suggested_only_where_it_applies(small_machine, mistral_folder, tmp_path):
    with pytest.raises(EdgeportError, match=r"; try --streaming \(--no-memory-check"):
        export(str(mistral_folder), "onnx", out_dir=tmp_path / "x", quiet=True)
    with pytest.raises(EdgeportError, match=r"more memory") as e:  # --streaming writes ONNX only
        export(str(mistral_folder), "tflite", out_dir=tmp_path / "x", quiet=True)
    assert "--streaming" not in str(e.value)
    with pytest.raises(EdgeportError, match=r"more memory"):  # presets have no checkpoint to stream
        export("mistral-tiny", "onnx", out_dir=tmp_path / "x", quiet=True)


def test_no_memory_check_skips_the_preflight(monkeypatch, tmp_path):
    """--no-memory-check on the auto path reaches the loader (which fails here on purpose)."""
    monkeypatch.setattr(streaming, "available_bytes", lambda: 10**8)
    monkeypatch.setattr("edgeport.export.auto.load", _never_load)
    with pytest.raises(AssertionError, match="was loaded"):
        export_auto("mistral-7b", out_dir=tmp_path / "x", quiet=True, memory_check=False)


def test_allocation_failure_while_loading_is_one_line(monkeypatch, tmp_path, capsys):
    """A real torch allocation failure (1 PiB: refused by the allocator) and a MemoryError while loading
    become a one-line CLI error; any other RuntimeError still propagates."""
    def torch_oom(*args, **kwargs):
        torch.empty(2**50, dtype=torch.uint8)

    def python_oom(*args, **kwargs):
        raise MemoryError()

    for loader, what in ((torch_oom, "an allocation of 1125899.9 GB failed"), (python_oom, "an allocation failed")):
        monkeypatch.setattr(reference_models, "load_reference", loader)
        assert main(["export", "--model", "mistral-tiny", "--target", "tflite", "--no-memory-check",
                     "-o", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("edgeport: error") == 1
        assert err.splitlines()[-1].startswith(f"edgeport: error: not enough memory to load mistral-tiny: {what} ")
    assert not (tmp_path / "x").exists()

    def other(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(reference_models, "load_reference", other)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        export("mistral-tiny", "onnx", out_dir=tmp_path / "y", quiet=True, memory_check=False)
