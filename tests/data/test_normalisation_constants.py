"""Each family's normalisation constants against the original processor/transform configs,
imported from the packages that define them (issue 18), and the pixels they give."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medvlsm_jax.data.preprocessing import preprocess
from medvlsm_jax.models import registry

pytestmark = pytest.mark.torch
T = pytest.importorskip("torchvision.transforms")
image_utils = pytest.importorskip("transformers.image_utils")
open_clip_constants = pytest.importorskip("open_clip.constants")
timm_data = pytest.importorskip("timm.data")


def _reference(family: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if family == "clipseg":
        # CIDAS/clipseg-rd64-refined's processor (ViTImageProcessor) and medvlsm's CLIPSeg
        # transforms: ImageNet's mean/std, as transformers and timm state them.
        assert tuple(timm_data.IMAGENET_DEFAULT_MEAN) == tuple(image_utils.IMAGENET_DEFAULT_MEAN)
        return tuple(image_utils.IMAGENET_DEFAULT_MEAN), tuple(image_utils.IMAGENET_DEFAULT_STD)
    if family in ("cris", "biomedclipseg", "biomedclipseg_d"):
        # CLIP's (CLIPImageProcessor defaults) = open_clip's OPENAI_DATASET_MEAN/STD, which
        # BiomedCLIP's open_clip config uses too.
        assert tuple(open_clip_constants.OPENAI_DATASET_MEAN) == tuple(image_utils.OPENAI_CLIP_MEAN)
        return tuple(open_clip_constants.OPENAI_DATASET_MEAN), tuple(open_clip_constants.OPENAI_DATASET_STD)
    pytest.fail(f"no reference normalisation for family {family!r}: add it here")


@pytest.mark.parametrize("family", registry.list_models())
def test_family_normalisation_is_the_originals(family):
    contract = registry.default_contract(family)
    mean, std = _reference(family)
    np.testing.assert_allclose(contract.mean, mean, rtol=0, atol=1e-8)
    np.testing.assert_allclose(contract.std, std, rtol=0, atol=1e-8)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8))
    ref = T.Compose([T.Resize(size=list(contract.image_size)), T.ToTensor(),
                     T.Normalize(mean=mean, std=std)])(img).permute(1, 2, 0).numpy()
    got, _ = preprocess(img, np.zeros((37, 53), np.uint8), contract)
    assert np.max(np.abs(got - ref) * np.asarray(std)) <= 1 / 255
