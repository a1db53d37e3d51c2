"""Masks as the original reads them, at each place it reads them.

Records store the mask file's own bytes (JPEG and PNG files as they are, other formats
re-encoded losslessly as PNG in their PIL mode; :func:`medvlsm_jax.data.io.mask_bytes`). The
original decodes a mask file in two different ways, and both are derived here from those bytes:

**Training target** (medvlsm ``ImageTextMaskDataset.__getitem__``): ``Image.open(path)`` with no
conversion, ``T.Resize(size, NEAREST_EXACT)`` (PIL ``NEAREST`` on a PIL image), ``T.ToTensor()``
and ``[:1]``: the first band of the decoded image (red for RGB/RGBA, the palette *index* for
``P``, luminance for ``L``) divided by 255. For a JPEG mask that is the red channel of PIL's
full-colour decode, with its compression ringing: values strictly between 0 and 1.
:func:`training_target` gives

* ``soft`` (default, the original's): exactly that, float32 in [0, 1] at model resolution. The
  original's loss and its validation Dice (MONAI ``compute_dice`` against the soft target, which
  early stopping and ``ReduceLROnPlateau`` read) see these values;
* ``binary``: the rule of builds before 2.0.0 (first band / full scale > 0.5, 0/1 masks at
  > 0, palette masks by luminance), then the same resize; {0, 1}.

16-bit masks (``I;16``): ``ToTensor`` leaves them unscaled (values up to 65535); we scale by
1/65535 instead. 1-bit masks: ``ToTensor`` maps them to {0, 1} as we do.

**Scoring ground truth** (medvlsm ``scripts/eval_metrics.py``): ``cv2.imread(path,
cv2.IMREAD_GRAYSCALE)``, then every pixel ``> 0`` is foreground. :func:`opencv_gray` reproduces
OpenCV's grayscale decode with PIL (tested pixel-identical to ``cv2.imread`` on JPEG and PNG in
every mode):

* JPEG: libjpeg decodes straight to grayscale (its Y channel, no chroma), which is PIL's
  ``draft("L")`` decode. It is not ``convert("L")`` of the RGB decode, nor the red channel;
* PNG: libpng's transformations as OpenCV sets them: 16-bit samples keep their high byte,
  palettes expand to RGB, alpha is dropped, 1/2/4-bit gray scales to 8 bits, and colour becomes
  gray through ``png_set_rgb_to_gray(0.299, 0.587)``: ``(9797 R + 19234 G + 3737 B) >> 15``
  (truncated) for non-gray pixels, gray pixels kept, and when the file has a significant
  ``gAMA`` or an ``sRGB`` chunk libpng's 8-bit gamma path (linearise, weight with rounding,
  re-encode);
* other formats (converted to PNG at build time) follow the PNG rule. OpenCV reads their colour
  through ``cvtColor``, whose coefficients differ slightly, and CMYK JPEGs through its own
  conversion: for such files (none in the paper's datasets) the emulation is ``convert("L")``.

:func:`ground_truth` thresholds it: ``gray > threshold`` with ``threshold`` 0 as the original
(``eval.gt_threshold``); 127 is the threshold of builds before 2.0.0 (which applied it to the
first band instead of the grayscale, identical for gray masks).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from medvlsm_jax.data.errors import DataError

MASK_TARGETS = ("soft", "binary")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def open_mask(data: bytes, where: str = "mask") -> Image.Image:
    """PIL image of stored mask bytes, decoded as ``Image.open`` does (no conversion)."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{where}: cannot decode mask: {err}") from err
    return img


def first_band(img: Image.Image, where: str = "mask") -> tuple[np.ndarray, float]:
    """The band ``ToTensor(mask)[:1]`` keeps, as an integer array, and the value that maps to 1."""
    if img.mode == "F":
        raise DataError(f"{where}: floating-point masks (mode F) are not supported")
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if img.mode == "1":  # ToTensor: 255 * bool, then / 255
        return arr.astype(np.uint8), 1.0
    if img.mode in _SIXTEEN_BIT_MODES:
        return np.clip(arr, 0, 65535).astype(np.uint16), 65535.0
    return arr.astype(np.uint8, copy=False), 255.0


def binarize(img: Image.Image, where: str = "mask") -> np.ndarray:
    """Boolean (H, W) mask by the rule of builds before 2.0.0 (``mask_target='binary'``)."""
    if img.mode == "P":
        img = img.convert("L")
    arr, full_scale = first_band(img, where)
    if img.mode == "1":
        return arr > 0
    if arr.size and arr.max() <= 1:
        return arr > 0
    return arr.astype(np.float64) / full_scale > 0.5


def _resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL ``NEAREST`` to (height, width), what ``T.Resize(NEAREST_EXACT)`` does to a PIL mask."""
    if arr.shape == tuple(size):
        return arr
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((size[1], size[0]),
                                                                        Image.Resampling.NEAREST))


def training_target(data: bytes | Image.Image, size: tuple[int, int], mode: str = "soft",
                    where: str = "mask") -> np.ndarray:
    """float32 (H, W) training target at ``size`` = (height, width); ``mode`` in :data:`MASK_TARGETS`."""
    img = data if isinstance(data, Image.Image) else open_mask(data, where)
    if mode == "soft":
        arr, full_scale = first_band(img, where)
        return _resize_nearest(arr, size).astype(np.float32) / np.float32(full_scale)
    if mode == "binary":
        return _resize_nearest(binarize(img, where).astype(np.uint8), size).astype(np.float32)
    raise DataError(f"unknown mask target {mode!r}; choose from {', '.join(MASK_TARGETS)}")


# ----------------------------------------------------------------- OpenCV's grayscale decode

_RC, _GC = 9797, 19234  # png_set_rgb_to_gray_fixed(29900, 58700): x * 32768 / 100000, truncated
_BC = 32768 - _RC - _GC
_GAMMA_THRESHOLD = 5000  # PNG_GAMMA_THRESHOLD_FIXED
_SRGB_GAMMA = 45455  # PNG_GAMMA_sRGB_INVERSE


def _png_reciprocal(a: int) -> int:
    return int(math.floor(1e10 / a + 0.5))


def _gamma_significant(g: int) -> bool:
    return g < 100000 - _GAMMA_THRESHOLD or g > 100000 + _GAMMA_THRESHOLD


def _gamma_table(g: int) -> np.ndarray:
    """libpng ``png_build_8bit_table``: ``floor(255 * (i / 255) ** (g / 1e5) + 0.5)``."""
    i = np.arange(256)
    if not _gamma_significant(g):
        return i
    table = np.floor(255 * np.power(i / 255.0, g * 1e-5) + 0.5).astype(np.int64)
    table[0], table[255] = 0, 255
    return table


def _png_gray(img: Image.Image) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_MODES:  # png_set_strip_16
        return (np.asarray(img).astype(np.int64) >> 8).astype(np.uint8)
    if img.mode == "1":
        return np.asarray(img.convert("L"))
    if img.mode in ("L", "LA"):
        return np.asarray(img.getchannel(0))
    rgb = np.asarray(img.convert("RGB") if img.mode != "RGB" else img).astype(np.int64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    gamma = _SRGB_GAMMA if "srgb" in img.info else round(float(img.info.get("gamma", 0)) * 100000)
    if gamma and _gamma_significant(gamma):  # png_do_rgb_to_gray, 8-bit gamma path
        to_linear = _gamma_table(_png_reciprocal(gamma))
        from_linear = _gamma_table(_png_reciprocal(_png_reciprocal(gamma)))
        gray = from_linear[(_RC * to_linear[r] + _GC * to_linear[g] + _BC * to_linear[b] + 16384) >> 15]
    else:
        gray = (_RC * r + _GC * g + _BC * b) >> 15
    return np.where((r == g) & (g == b), r, gray).astype(np.uint8)


def opencv_gray(data: bytes, where: str = "mask") -> np.ndarray:
    """uint8 (H, W): what ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)`` returns for the file."""
    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        img.draft("L", img.size)  # libjpeg's grayscale output (no-op for CMYK)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{where}: cannot decode mask: {err}") from err
    if img.format == "JPEG":
        return np.asarray(img if img.mode == "L" else img.convert("L"))
    if img.mode == "F":
        raise DataError(f"{where}: floating-point masks (mode F) are not supported")
    return _png_gray(img)


def ground_truth(data: bytes, threshold: int = 0, where: str = "mask") -> np.ndarray:
    """Boolean (H, W) scoring ground truth: OpenCV grayscale ``> threshold``."""
    return opencv_gray(data, where) > threshold
