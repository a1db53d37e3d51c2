"""Model folders written before the input contract existed still load, preprocess and predict
exactly as before.

``tests/fixtures/legacy_folders`` holds what the previous release (commit e764459) wrote: the
``model.json`` of a CLIPSeg exported by its trainer (trained at 32 px, old config fields
``image_size`` / ``input_size``, no recorded contract) and of a converted CRIS (old ``img_size``
field, ``pad_id=0``), their ``tokenizer_config.json``, and the logits that release computed with
``medvlsm_jax.load(folder).logits`` on fixed images and prompts (CRIS: every 8th pixel). The
parameters (seeded init, same leaves and layout in both releases) and the vocabulary files
(identical to the bundled one) are regenerated here to keep the fixtures small.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
from flax import nnx

import medvlsm_jax
from medvlsm_jax import weights
from medvlsm_jax.data.tokenizers import ClipTokenizer
from medvlsm_jax.models import registry

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "legacy_folders"
SEEDS = {"clipseg": 3, "cris": 4}  # the seeds the fixtures' models were initialised with
PROMPTS = ["a small pink polyp", "two large round polyps in the top left of the image"]


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8), rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)]


def _legacy_folder(family: str, root: pathlib.Path) -> pathlib.Path:
    meta = json.loads((FIXTURES / f"{family}_model.json").read_text())
    config = registry.config_from_dict(family, meta["config"])  # legacy keys translated
    model = registry.get_spec(family).build(config, nnx.Rngs(SEEDS[family]))
    folder = root / family
    weights.save_model(str(folder), family, {}, model)
    shutil.copy(FIXTURES / f"{family}_model.json", folder / weights.MODEL_JSON)  # the legacy record
    tok_dir = folder / weights.TOKENIZER_DIR
    ClipTokenizer.default().save(tok_dir)
    shutil.copy(FIXTURES / f"{family}_tokenizer_config.json", tok_dir / "tokenizer_config.json")
    return folder


@pytest.mark.parametrize("family", ["clipseg", "cris"])
def test_legacy_folder_loads_with_identical_logits(family, tmp_path):
    meta = json.loads((FIXTURES / f"{family}_model.json").read_text())
    assert "contract" not in meta  # really the old format
    ref = np.load(FIXTURES / "reference_logits.npz")
    seg = medvlsm_jax.load(_legacy_folder(family, tmp_path))
    pixels, _ = seg.preprocess(_images())
    tok = seg.tokenize(PROMPTS)
    np.testing.assert_array_equal(tok["input_ids"], ref[f"{family}/input_ids"])
    logits = np.asarray(seg.logits(pixels, tok["input_ids"], tok["attention_mask"]))
    if family == "clipseg":
        assert seg.contract.image_size == (32, 32)  # the size it was trained at, from the old record
        assert "image_size" in meta["config"] and "input_size" in meta["config"]
    else:
        assert seg.contract.image_size == (416, 416) and seg.contract.text.pad_id == 0
        assert meta["config"]["img_size"] == 416
        logits = logits[:, ::8, ::8]
    np.testing.assert_allclose(logits, ref[f"{family}/logits"], rtol=0, atol=1e-5)
