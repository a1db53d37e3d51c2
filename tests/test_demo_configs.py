"""Every model the quick start can name builds a run at its demo size with the right inputs."""

import pytest

from medvlsm_jax.config import load_config
from medvlsm_jax.train.run import build_run


@pytest.mark.parametrize("model,text", [("clipseg", "clip"), ("biomedclipseg", "bert"), ("unet", None)])
def test_demo_model_choice_builds(model, text):
    run = build_run(load_config(f"configs/demo.py:model={model}"), training=False)
    assert run.family == model and run.contract.image_size == (64, 64)
    assert (run.contract.text.kind if run.contract.text else None) == text
    if text:  # the demo's prompts tokenise without [UNK] (the bundled vocabularies)
        ids = run.tokenizer(["a large pink polyp at the top left"])["input_ids"][0].tolist()
        unk = {"clip": None, "bert": 1}[text]
        assert unk not in ids


def test_demo_rejects_an_unknown_model():
    with pytest.raises(ValueError, match="choose from clipseg, biomedclipseg, unet"):
        load_config("configs/demo.py:model=segformer")
