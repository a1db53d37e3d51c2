"""BiomedCLIPSeg through the one trainer: the BERT vocabulary comes from the init folder, frozen
encoders with the feature cache, export with its tokenizer, zero-shot refused."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import medvlsm_jax
from medvlsm_jax import weights
from medvlsm_jax.data.bert_tokenizer import BertTokenizer
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.models import registry
from medvlsm_jax.config import load_config
from medvlsm_jax.train import loop
from medvlsm_jax.train.run import build_run

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789",
         "a", "pink", "polyp", "round", "one"]


@pytest.fixture(scope="module")
def init_folder(tmp_path_factory):
    """What ``medvlsm-convert biomedclipseg`` writes, for the tiny size (no torch needed)."""
    folder = tmp_path_factory.mktemp("biomedclipseg_tiny")
    model = registry.build_model("biomedclipseg", "tiny", seed=1)
    weights.save_model(str(folder), "biomedclipseg", model.config.to_dict(), model)
    BertTokenizer.from_vocab({t: i for i, t in enumerate(dict.fromkeys(VOCAB))}).save(folder / "tokenizer")
    return folder


def _config(data_dir, init, recipe="released"):
    c = load_config(f"biomedclipseg:dataset=synthetic_polyp,prompt=p1,variant=tiny,recipe={recipe}")
    c.data.data_dir = data_dir
    c.model.init = str(init)
    c.train.update(batch_size=4, num_epochs=1, min_epochs=1, progress=False, log_every_steps=1)
    c.eval.update(batch_size=4, hd95=False, write_masks=False)
    return c


def test_released_recipe_trains_the_decoder_only_with_the_cache(tiny_data_dir, init_folder, tmp_path):
    c = _config(tiny_data_dir, init_folder)
    assert (c.train.lr, c.train.weight_decay, c.train.loss, c.model.freeze_encoder) == (2e-3, 1e-3,
                                                                                         "paper_faithful", True)
    out = loop.train_and_evaluate(c, str(tmp_path))
    run = out["run"]
    assert run.contract.image_size == (224, 224) and run.contract.text.max_length == 256
    assert isinstance(run.tokenizer, BertTokenizer) and out["cache"] is not None
    assert out["cache"].stats()["misses"] > 0
    before = medvlsm_jax.load(init_folder).model
    after = run.model(out["state"])
    enc = lambda m: np.asarray(m.biomedclip.text.proj[0].kernel[...])  # noqa: E731
    dec = lambda m: np.asarray(m.decoder.film_mul.kernel[...])  # noqa: E731
    np.testing.assert_array_equal(enc(after), enc(before))
    assert not np.allclose(dec(after), dec(before))
    seg = medvlsm_jax.load(out["export"])
    assert isinstance(seg.tokenizer, BertTokenizer)
    assert seg.tokenizer(["a pink polyp"])["input_ids"][0, :5].tolist() == [2, 5, 41, 42, 3]
    (mask,) = seg.predict([np.zeros((40, 52, 3), np.uint8)], "a pink polyp")
    assert mask.shape == (40, 52)
    assert nnx.state(seg.model, nnx.Param)  # parameters restored


def test_zeroshot_refused_and_vocabulary_required(tiny_data_dir, init_folder, tmp_path):
    with pytest.raises(ValueError, match="zero-shot evaluation is not defined"):
        loop.evaluate_zeroshot(_config(tiny_data_dir, init_folder), str(tmp_path))
    c = _config(tiny_data_dir, init_folder, recipe="paper")
    c.model.init = ""
    c.model.overrides.vocab = ""  # the full-size model's setting: no vocabulary of its own
    with pytest.raises(DataError, match="no bundled vocabulary"):
        build_run(c)


def test_tiny_variant_without_init_uses_the_bundled_demo_vocabulary(tiny_data_dir, init_folder):
    c = _config(tiny_data_dir, init_folder, recipe="paper")
    c.model.init = ""
    run = build_run(c, training=False)
    assert isinstance(run.tokenizer, BertTokenizer)
    ids = run.tokenizer(["a pink polyp"])["input_ids"][0]
    assert 1 not in ids.tolist()  # no [UNK]
    # with an init folder, the folder's vocabulary wins
    assert build_run(_config(tiny_data_dir, init_folder), training=False).tokenizer(
        ["a pink polyp"])["input_ids"][0, :5].tolist() == [2, 5, 41, 42, 3]
