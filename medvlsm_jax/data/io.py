"""Robust reading of images and masks, as stored by the builders and read by the pipeline.

Rules (each enforced with a :class:`DataError` naming the file):

* Images become 8-bit RGB. Like the original (``Image.open(p).convert("RGB")``), RGBA loses its
  alpha channel, grayscale and palette images are replicated to three channels. 16-bit
  grayscale images (PIL modes ``I;16*`` / ``I``) are scaled to 8 bits (``round(v / 257)``)
  instead of being clipped at 255 as ``convert("RGB")`` would do.
* Masks become boolean. The first channel is used for RGB(A)/LA masks (the original takes
  ``ToTensor(mask)[:1]``), palette masks are converted to luminance. Values are scaled to
  [0, 1] by the range of their dtype (``/255`` for 8-bit as ``ToTensor`` does, ``/65535`` for
  16-bit) and binarised at ``> 0.5``; masks whose maximum is 1 are 0/1 masks and binarise at
  ``> 0``. This handles 0/255 PNGs, 0/1 PNGs and JPEG-compressed masks (whose ringing stays far
  from 127.5). An all-zero mask (e.g. BUSI normal cases) is valid.
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

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
    """Boolean (H, W) mask from a PIL mask image (rules in the module docstring)."""
    if img.mode == "P":
        img = img.convert("L")
    if img.mode == "F":
        raise DataError(f"{where}: floating-point masks (mode F) are not supported")
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype == bool:
        return arr.copy()
    full_scale = 65535.0 if img.mode in _SIXTEEN_BIT_MODES else 255.0
    if arr.size and arr.max() <= 1:
        return arr > 0
    return arr.astype(np.float64) / full_scale > 0.5


def read_mask(path: str | pathlib.Path) -> np.ndarray:
    """Boolean (H, W) mask read from a file."""
    return binarize_mask(open_image(path), where=str(path))


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


def decode_mask(data: bytes) -> np.ndarray:
    """uint8 (H, W) mask in {0, 1} from stored PNG bytes."""
    arr = np.asarray(Image.open(io.BytesIO(data)))
    return arr[..., 0] if arr.ndim == 3 else arr
