"""The dataset catalogue (medvlsm_jax.data.catalogue) is the one description of each dataset:
the serving registry, the TFDS builders and prompt generation all read their entry from it."""

import dataclasses
import pathlib

import pytest

from medvlsm_jax.data import catalogue, registry as data_registry
from medvlsm_jax.data.builders import BUILDERS, builder_class
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.prompts import validate_prompt
from medvlsm_jax.promptgen import PromptGenError, datasets as gen_registry


def _builder_prompt_keys(name, data_dir):
    builder = builder_class(name)(data_dir=str(data_dir))
    # One generated class per entry keeps TFDS's <data_dir>/<name>/<version> layout.
    assert pathlib.Path(builder.data_dir) == data_dir / name / str(builder.VERSION)
    return tuple(builder.info.features["prompts"].keys()), builder.info.description


def test_every_consumer_reads_the_catalogue_entry(tmp_path):
    assert tuple(BUILDERS) == tuple(gen_registry.DATASETS) == catalogue.DATASETS
    for entry in catalogue.CATALOGUE:
        assert data_registry.get_spec(entry.name) is entry
        keys, description = _builder_prompt_keys(entry.name, tmp_path)
        assert keys == entry.prompt_keys and entry.title in description, entry.name
        instructions = builder_class(entry.name).MANUAL_DOWNLOAD_INSTRUCTIONS
        assert entry.title in instructions and (entry.synthetic or entry.access in instructions)
        gen = gen_registry.get_dataset(entry.name)
        assert gen.entry is entry and gen.split is entry.split_rule
        assert gen.family.name == entry.prompt_family
        assert tuple(gen.family.templates) == gen.prompt_keys == entry.prompt_keys, entry.name
    assert data_registry.POOLED["pooled_polyp"] == ("kvasir_polyp", "clinicdb_polyp", "bkai_polyp")
    assert len(data_registry.POOLED["pooled_all"]) == 8


def test_an_edited_entry_reaches_every_consumer(tmp_path, monkeypatch):
    """Changing BUSI's entry alone changes what the registry serves, what its builder writes,
    which prompts validate, and prompt generation refuses a family that no longer fits."""
    edited = dataclasses.replace(catalogue.SPECS["busi"], title="Edited BUSI", num_prompts=5)
    monkeypatch.setitem(catalogue.SPECS, "busi", edited)
    assert data_registry.get_spec("busi").prompt_keys == ("p0", "p1", "p2", "p3", "p4")
    keys, description = _builder_prompt_keys("busi", tmp_path)
    assert keys == edited.prompt_keys and "Edited BUSI" in description
    validate_prompt("p4", None, ["busi"])
    with pytest.raises(DataError, match="'busi' has no prompt 'p6'; its keys are p0, p1, p2, p3, p4"):
        validate_prompt("p6", None, ["pooled_all"])
    with pytest.raises(PromptGenError, match="'busi' has prompts p0, p1, p2, p3, p4 but family 'busi'"):
        gen_registry.family_of(edited)
    with pytest.raises(PromptGenError, match="unknown prompt family 'nope'"):
        gen_registry.family_of(dataclasses.replace(edited, prompt_family="nope"))


def test_prompt_validation_names_every_member_that_cannot_serve():
    assert validate_prompt("p9", None, ["pooled_polyp", "isic"]).key == "p9"
    with pytest.raises(DataError) as err:
        validate_prompt("p7", None, ["kvasir_polyp", "pooled_all"])
    assert "'busi' has no prompt 'p7'" in str(err.value)
    assert "'chexlocalize' has no prompt 'p7'" in str(err.value)
    assert "camus" not in str(err.value) and "kvasir" not in str(err.value)
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        validate_prompt("p1", None, ["mnist"])


def test_input_contract_follows_the_model_config():
    from medvlsm_jax.models import registry

    cris = registry.get_spec("cris")
    contract = cris.resolve_contract(cris.config("tiny", pad_id=0, word_len=20), 64)
    assert contract.image_size == (64, 64) and contract.text.pad_id == 0 and contract.text.max_length == 20
    clipseg = registry.get_spec("clipseg")
    contract = clipseg.resolve_contract(clipseg.config("tiny"), (32, 48), vocab="/some/tokenizer")
    assert contract.image_size == (32, 48) and contract.text.pad_id is None
    assert contract.text.vocab == "/some/tokenizer" and contract.input_keys == ("pixel_values", "input_ids",
                                                                              "attention_mask")
    assert clipseg.resolve_contract(clipseg.config("tiny")).image_size == (352, 352)
