"""The serving registry (medvlsm_jax.data) and the generation registry (medvlsm_jax.promptgen)
describe the same datasets from two sides; they must agree on names and prompt keys."""

from medvlsm_jax.data import registry as data_registry
from medvlsm_jax.promptgen import datasets as gen_registry


def test_same_datasets_and_prompt_keys():
    assert set(data_registry.DATASETS) == set(gen_registry.DATASETS)
    for name in data_registry.DATASETS:
        gen_keys = tuple(sorted(gen_registry.get_dataset(name).family.templates, key=lambda k: int(k[1:])))
        assert data_registry.get_spec(name).prompt_keys == gen_keys, name


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
