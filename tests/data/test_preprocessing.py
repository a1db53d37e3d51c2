"""Resize/normalise parity with torchvision on PIL images (what the original medvlsm runs)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medvlsm_jax.data.preprocessing import normalize, resize_image, resize_mask
from medvlsm_jax.models import registry
from medvlsm_jax.models.contract import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

T = pytest.importorskip("torchvision.transforms", reason="parity needs the torch extra")
pytestmark = pytest.mark.torch

SHAPES = [(37, 53), (301, 247), (24, 24)]  # up- and down-sampling, square


@pytest.mark.parametrize("model", registry.list_models())
@pytest.mark.parametrize("shape", SHAPES)
def test_image_matches_torchvision(model, shape):
    spec = registry.default_contract(model)
    img = Image.fromarray(np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3),
                                                                     dtype=np.uint8))
    ref = T.Compose([T.Resize(size=list(spec.image_size)), T.ToTensor(),
                     T.Normalize(mean=spec.mean, std=spec.std)])(img).permute(1, 2, 0).numpy()
    got = normalize(resize_image(img, spec.image_size), spec.mean, spec.std)
    assert got.shape == ref.shape == (*spec.image_size, 3) and got.dtype == np.float32
    # compare in [0, 1] pixel units: within 1/255 (in practice identical)
    assert np.max(np.abs(got - ref) * np.asarray(spec.std)) <= 1 / 255


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [(352, 352), (416, 416), (20, 30)])
def test_mask_matches_torchvision_nearest_exact(shape, size):
    rng = np.random.default_rng(shape[0])
    mask = (rng.random(shape) > 0.5).astype(np.uint8)
    ref = T.Compose([T.Resize(size=list(size), interpolation=T.InterpolationMode.NEAREST_EXACT),
                     T.ToTensor()])(Image.fromarray(mask * 255))[0].numpy()
    np.testing.assert_array_equal(resize_mask(mask, size), ref > 0.5)


def test_family_contracts_and_unknown_model():
    clipseg, cris = registry.default_contract("clipseg"), registry.default_contract("cris")
    assert (clipseg.image_size, clipseg.mean, clipseg.std) == ((352, 352), IMAGENET_MEAN, IMAGENET_STD)
    assert (cris.image_size, cris.mean, cris.std) == ((416, 416), CLIP_MEAN, CLIP_STD)
    assert clipseg.text.max_length == cris.text.max_length == 77
    with pytest.raises(KeyError, match="known models: "):
        registry.default_contract("nope")
