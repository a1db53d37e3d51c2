"""Per-model preprocessing, as in the original medvlsm configs (``configs/experiment/*.yaml``).

Images: ``torchvision.transforms.Resize(size)`` on a PIL image, i.e. PIL bilinear resampling
(PIL always antialiases), then ``ToTensor`` (``/255``) and ``Normalize(mean, std)``, in float32.
Masks: ``Resize(size, interpolation=NEAREST_EXACT)``, which torchvision maps to PIL ``NEAREST``
for PIL images (PIL samples pixel centres, i.e. nearest-exact). Masks are already binary here
(see :mod:`medvlsm_jax.data.io`), so resizing and binarising commute.

The table is keyed by model name strings so this module never imports the models. The CNN
baselines get 256x256 squares through the same PIL path (their first configs named
``albumentations.Resize(256, 256)``, the released ones torchvision's shorter-side ``Resize(256)``;
why squares: :mod:`medvlsm_jax.data.shorter_side`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from medvlsm_jax.data.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class TextSpec:
    """Tokenizer of a model: ``kind`` 'clip' (BPE) or 'bert' (BiomedCLIP, not yet available)."""

    kind: str
    max_length: int
    pad_id: int | None = None  # None: the tokenizer's own padding token


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """Input geometry and normalisation of a model; ``text`` is None for image-only models."""

    image_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    text: TextSpec | None


_CLIP77 = TextSpec("clip", 77)
_BERT256 = TextSpec("bert", 256)

PREPROCESSING: dict[str, PreprocessSpec] = {
    "clipseg": PreprocessSpec((352, 352), IMAGENET_MEAN, IMAGENET_STD, _CLIP77),
    "cris": PreprocessSpec((416, 416), CLIP_MEAN, CLIP_STD, _CLIP77),
    "biomedclipseg": PreprocessSpec((224, 224), CLIP_MEAN, CLIP_STD, _BERT256),
    "biomedclipseg_d": PreprocessSpec((224, 224), CLIP_MEAN, CLIP_STD, _BERT256),
    "unet": PreprocessSpec((256, 256), IMAGENET_MEAN, IMAGENET_STD, None),
    "unetpp": PreprocessSpec((256, 256), IMAGENET_MEAN, IMAGENET_STD, None),
    "deeplabv3plus": PreprocessSpec((256, 256), IMAGENET_MEAN, IMAGENET_STD, None),
}


def get_preprocessing(model: str) -> PreprocessSpec:
    """The spec of a model name; unknown names raise a DataError listing the known ones."""
    if model not in PREPROCESSING:
        raise DataError(f"no preprocessing for model {model!r}; known: {', '.join(PREPROCESSING)}")
    return PREPROCESSING[model]


def resize_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """torchvision ``Resize(size)`` on a PIL image: PIL bilinear to (height, width)."""
    return img.resize((size[1], size[0]), Image.Resampling.BILINEAR)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torchvision ``Resize(size, NEAREST_EXACT)`` on a PIL mask; uint8 (H, W) in, out."""
    img = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.NEAREST))


def normalize(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``Normalize(mean, std)(ToTensor()(img))`` as float32 NHWC (H, W, 3)."""
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def preprocess(image: Image.Image, mask: np.ndarray, spec: PreprocessSpec
               ) -> tuple[np.ndarray, np.ndarray]:
    """(pixel_values float32 (H, W, 3), mask float32 (H, W) in {0, 1}) at model resolution."""
    pixels = normalize(resize_image(image, spec.image_size), spec.mean, spec.std)
    return pixels, resize_mask(mask, spec.image_size).astype(np.float32)


def make_tokenizer(text: TextSpec) -> Any:
    """The default (offline) tokenizer of a text spec."""
    if text.kind == "clip":
        from medvlsm_jax.data.tokenizers import ClipTokenizer  # noqa: PLC0415

        return ClipTokenizer.default(max_length=text.max_length, pad_id=text.pad_id)
    raise DataError(f"tokenizer kind {text.kind!r} is not available yet; pass tokenizer=...")
