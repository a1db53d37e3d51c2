"""Resize/normalise parity with torchvision on PIL images (what the original medvlsm runs)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.preprocessing import (PREPROCESSING, get_preprocessing, normalize,
                                            resize_image, resize_mask)

T = pytest.importorskip("torchvision.transforms", reason="parity needs the torch extra")
pytestmark = pytest.mark.torch

SHAPES = [(37, 53), (301, 247), (24, 24)]  # up- and down-sampling, square


@pytest.mark.parametrize("model", ["clipseg", "cris", "biomedclipseg", "unet"])
@pytest.mark.parametrize("shape", SHAPES)
def test_image_matches_torchvision(model, shape):
    spec = get_preprocessing(model)
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


def test_table_and_unknown_model():
    assert get_preprocessing("clipseg").image_size == (352, 352)
    assert get_preprocessing("cris").image_size == (416, 416)
    assert get_preprocessing("biomedclipseg").text.max_length == 256
    with pytest.raises(DataError, match="known: " + ", ".join(PREPROCESSING)):
        get_preprocessing("nope")
