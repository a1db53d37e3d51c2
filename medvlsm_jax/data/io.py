"""Robust reading of images and masks, as stored by the builders and read by the pipeline.

Rules (each enforced with a :class:`DataError` naming the file):

* Images become 8-bit RGB. Like the original (``Image.open(p).convert("RGB")``), RGBA loses its
  alpha channel, grayscale and palette images are replicated to three channels. 16-bit
  grayscale images (PIL modes ``I;16*`` / ``I``) are scaled to 8 bits (``round(v / 257)``)
  instead of being clipped at 255 as ``convert("RGB")`` would do.
* Masks are stored losslessly as the file's own bytes (:func:`mask_bytes`): the original
  decodes them differently for training and for scoring, and :mod:`medvlsm_jax.data.masks`
  derives both (the soft or binary training target, the OpenCV-grayscale ground truth) from
  those bytes. An all-zero mask (e.g. BUSI normal cases) is valid. :func:`read_mask` is the
  binary rule of builds before 2.0.0 (first channel, palette by luminance, ``/255`` or
  ``/65535`` then ``> 0.5``; 0/1 masks at ``> 0``).
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from medvlsm_jax.data import masks
from medvlsm_jax.data.errors import DataError

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_PASSTHROUGH_FORMATS = ("JPEG", "PNG")


def open_image(path: str | pathlib.Path) -> Image.Image:
    """Open and fully decode an image file; a missing or corrupt file raises DataError."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot decode image {path}: {err}") from err
    return img


def to_rgb8(img: Image.Image, where: str = "image") -> Image.Image:
    """Convert any supported PIL image to 8-bit RGB (rules in the module docstring)."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        raise DataError(f"{where}: floating-point images (mode F) are not supported")
    return img.convert("RGB")


def image_bytes(path: str | pathlib.Path) -> tuple[bytes, tuple[int, int]]:
    """Encoded 8-bit RGB image and its (height, width) for storage in a record.

    JPEG/PNG files already in RGB are stored as they are (decoding them later gives the very
    pixels the original's PIL decode gives); anything else is converted and stored as PNG.
    """
    img = open_image(path)
    size = (img.height, img.width)
    if img.mode == "RGB" and img.format in _PASSTHROUGH_FORMATS:
        return pathlib.Path(path).read_bytes(), size
    return encode_png(to_rgb8(img, where=str(path))), size


def binarize_mask(img: Image.Image, where: str = "mask") -> np.ndarray:
    """Boolean (H, W) mask from a PIL mask image (the pre-2.0.0 rule, module docstring)."""
    return masks.binarize(img, where)


def read_mask(path: str | pathlib.Path) -> np.ndarray:
    """Boolean (H, W) mask read from a file (the pre-2.0.0 rule)."""
    return binarize_mask(open_image(path), where=str(path))


def mask_bytes(path: str | pathlib.Path) -> tuple[bytes, tuple[int, int]]:
    """Lossless mask bytes for a record and the mask's (height, width).

    JPEG and PNG files are stored as they are (the original decodes the files themselves, and a
    PNG's gamma chunks change OpenCV's grayscale); other formats are re-encoded as PNG in their
    own PIL mode (CMYK as RGB). Both decodings of :mod:`medvlsm_jax.data.masks` are checked here.
    """
    img = open_image(path)
    where = str(path)
    masks.first_band(img, where)  # unsupported modes fail at build time, naming the file
    if img.format in _PASSTHROUGH_FORMATS:
        data = pathlib.Path(path).read_bytes()
    else:
        try:
            data = encode_png(img.convert("RGB") if img.mode == "CMYK" else img)
        except (OSError, ValueError) as err:
            raise DataError(f"{where}: cannot store a mask of mode {img.mode}: {err}") from err
    masks.opencv_gray(data, where)
    return data, (img.height, img.width)


def encode_png(img: Image.Image | np.ndarray) -> bytes:
    """Lossless PNG bytes of a PIL image or a uint8 array."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """8-bit RGB PIL image from stored bytes."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return to_rgb8(img)
