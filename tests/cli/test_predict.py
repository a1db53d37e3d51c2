"""medvlsm-predict and Segmenter.predict on a converted tiny model and a generated image."""

import numpy as np
import pytest
from PIL import Image

from medvlsm_jax import weights
from medvlsm_jax.api import load
from medvlsm_jax.cli import predict as predict_cli
from medvlsm_jax.data.tokenizers import ClipTokenizer
from medvlsm_jax.models import registry


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    dst = tmp_path_factory.mktemp("tiny_clipseg")
    spec = registry.get_spec("clipseg")
    cfg = spec.config("tiny")
    weights.save_model(str(dst), "clipseg", cfg.to_dict(), registry.build_model("clipseg", cfg, seed=0))
    ClipTokenizer.default().save(dst / weights.TOKENIZER_DIR)
    return dst


def _image(path, h=57, w=83):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_load_round_trips_parameters(tiny_folder):
    seg = load(tiny_folder)
    fresh = registry.build_model("clipseg", "tiny", seed=0)
    np.testing.assert_array_equal(np.asarray(seg.model.decoder.film_mul.kernel[...]),
                                  np.asarray(fresh.decoder.film_mul.kernel[...]))


def test_predict_returns_masks_at_original_size(tiny_folder, tmp_path):
    seg = load(tiny_folder)
    img = Image.open(_image(tmp_path / "a.png"))
    masks = seg.predict([img, np.asarray(img)[:40, :30]], ["polyp", "a large polyp"])
    assert [m.shape for m in masks] == [(57, 83), (40, 30)]
    assert all(m.dtype == bool for m in masks)
    # threshold semantics: 0 and 1 bracket every sigmoid value
    assert seg.predict(img, "polyp", threshold=-1.0).all() and not seg.predict(img, "polyp", threshold=1.0).any()
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        seg.predict([img, img], ["a", "b", "c"])


def test_predict_cli_writes_mask_and_overlay(tiny_folder, tmp_path, capsys):
    path = _image(tmp_path / "case 1.png")
    out = tmp_path / "out"
    assert predict_cli.main(["--checkpoint", str(tiny_folder), "--image", str(path), "--prompt", "polyp",
                             "--out", str(out)]) == 0
    mask = np.asarray(Image.open(out / "case 1_mask.png"))
    overlay = np.asarray(Image.open(out / "case 1_overlay.png"))
    assert mask.shape == (57, 83) and set(np.unique(mask)) <= {0, 255}
    assert overlay.shape == (57, 83, 3)
    assert "foreground pixels" in capsys.readouterr().out


def test_load_rejects_non_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json is missing"):
        load(tmp_path)
