"""Input preprocessing, as the original medvlsm datasets do it, for a model's resolved
:class:`~medvlsm_jax.models.contract.InputContract` (the model family owns the contract: size,
normalisation, text spec; this module only applies it).

Images: ``torchvision.transforms.Resize(size)`` on a PIL image, i.e. PIL bilinear resampling
(PIL always antialiases), then ``ToTensor`` (``/255``) and ``Normalize(mean, std)``, in float32.
Masks: ``Resize(size, interpolation=NEAREST_EXACT)``, which torchvision maps to PIL ``NEAREST``
for PIL images (PIL samples pixel centres, i.e. nearest-exact). The pipeline's training targets
come from :mod:`medvlsm_jax.data.masks` (the original's soft ``ToTensor`` values, or binary);
:func:`preprocess` resizes an already decoded uint8 mask.

The CNN baselines get 256x256 squares through the same PIL path (their first configs named
``albumentations.Resize(256, 256)``, the released ones torchvision's shorter-side ``Resize(256)``;
why squares: :mod:`medvlsm_jax.data.shorter_side`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from medvlsm_jax.data.errors import DataError
from medvlsm_jax.models.contract import InputContract, TextSpec


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


def preprocess(image: Image.Image, mask: np.ndarray, spec: InputContract
               ) -> tuple[np.ndarray, np.ndarray]:
    """(pixel_values float32 (H, W, 3), mask float32 (H, W) in {0, 1}) at model resolution."""
    pixels = normalize(resize_image(image, spec.image_size), spec.mean, spec.std)
    return pixels, resize_mask(mask, spec.image_size).astype(np.float32)


def make_tokenizer(text: TextSpec) -> Any:
    """The tokenizer a text spec asks for: its ``vocab`` folder when set, else the vocabulary
    bundled with the package (CLIP BPE), padded to ``max_length`` with ``pad_id``."""
    if text.kind == "clip":
        from medvlsm_jax.data.tokenizers import ClipTokenizer  # noqa: PLC0415

        if text.vocab:
            return ClipTokenizer.from_dir(text.vocab, max_length=text.max_length, pad_id=text.pad_id)
        return ClipTokenizer.default(max_length=text.max_length, pad_id=text.pad_id)
    if text.kind == "bert":
        if not text.vocab:
            raise DataError("the BERT tokenizer has no bundled vocabulary: use a converted model folder "
                            "(medvlsm-convert biomedclipseg ...) as model.init; its tokenizer/ is the vocabulary")
        from medvlsm_jax.data.bert_tokenizer import BertTokenizer  # noqa: PLC0415

        return BertTokenizer.from_dir(text.vocab, max_length=text.max_length)
    raise DataError(f"tokenizer kind {text.kind!r} is not available; known: clip, bert")
