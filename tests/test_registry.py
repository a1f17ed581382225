"""The registry holds exactly the families this table knows, each with a tiny preset for tests."""

import warnings

import pytest

from edgeport.reference_models import families, load_reference

# family -> its HF model_type; a family added without a row here fails test_table_matches_registry
EXPECTED = {
    "bert": "bert", "convbert": "convbert", "deberta": "deberta", "deberta-v2": "deberta-v2", "gpt2": "gpt2",
    "mega": "mega", "megatron-bert": "megatron-bert", "mistral": "mistral", "mixtral": "mixtral",
    "mobilebert": "mobilebert", "luke": "luke",
}


def test_table_matches_registry():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a family module that fails to import is a failure here
        assert set(families()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_family_has_tiny_preset_and_model_type(name):
    fam = families()[name]
    assert EXPECTED[name] in fam.model_types
    assert f"{name}-tiny" in fam.presets, fam.presets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(f"{name}-tiny")
    assert ref.random_weights and ref.task == fam.default_task
