"""Input size of the CNN baselines: 256x256 squares, and why not torchvision's shorter-side resize.

medvlsm's released CNN configs (``configs/experiment/{unet,unetpp,deeplabv3plus}.yaml`` since
commit 9a91b04, Feb 2024) preprocess with ``torchvision.transforms.Resize(256)`` — an *int*, so
the shorter side becomes 256 and the aspect ratio is kept. The configs as first committed
(2ebbb48, Nov 2023) used ``albumentations.Resize(height=256, width=256)``: squares.

We train and evaluate the CNNs on 256x256 squares (``data/preprocessing.py``), for every dataset:

1. Where a dataset's images differ in aspect ratio (Kvasir-SEG, ISIC, BUSI, CheXlocalize, ...),
   shorter-side resizing gives every image its own shape; one batch needs one shape (torch's
   default collate refuses too), so the released pipeline cannot train on them as written.
2. Where a dataset has a single aspect ratio, the long side is rarely a multiple of the network's
   output stride (32; 16 for DeepLabV3+), and SMP refuses such inputs (``check_input_shape``:
   "Wrong input shape ... Expected image height and width divisible by 32"): CVC-ClinicDB and DFU
   (4:3) -> 256x341, ETIS (1225x966) -> 256x324, CVC-ColonDB/CVC-300 (574x500) -> 256x293.
   Only aspect ratios whose long side lands on a multiple (1:1, 5:4 -> 256x320, ...) would run.
3. 256x256 is what the configs first specified and what every other model of the benchmark
   gets (a square at its own resolution); evaluation is at the original resolution anyway.

:func:`dataset_input_size` states the rule: torchvision's shape when all of a dataset's images
share one and it is a multiple of the stride (the only case where the released configs run),
else the square. It is not wired into the data pipeline (which uses one size per model); a run
can still use a dataset's shorter-side shape where it applies.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["dataset_input_size", "torchvision_resize_size"]


def torchvision_resize_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``torchvision.transforms.Resize(size)`` (an int) output ``(height, width)``: the shorter
    side becomes ``size``, the longer ``int(size * long / short)`` (torchvision's
    ``_compute_resized_output_size``)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_h, new_w


def dataset_input_size(image_sizes: Iterable[tuple[int, int]], size: int = 256, stride: int = 32) -> tuple[int, int]:
    """The input ``(height, width)`` for a dataset whose images have ``image_sizes`` (H, W):
    torchvision's shorter-side shape if it is the same for every image and divisible by
    ``stride``, else ``(size, size)``."""
    shapes = {torchvision_resize_size(h, w, size) for h, w in image_sizes}
    if len(shapes) == 1:
        (shape,) = shapes
        if shape[0] % stride == 0 and shape[1] % stride == 0:
            return shape
    return size, size
