"""Mask attributes: labelling, size classes, grid location, bbox, shape and colour."""

import numpy as np
import pytest

from medvlsm_jax.promptgen.masks import (colour_name, describe_mask, label_components,
                                         shape_name, size_class)

YY, XX = np.mgrid[:256, :256]


def disk(cy, cx, r):
    return (YY - cy) ** 2 + (XX - cx) ** 2 < r ** 2


def test_labelling_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for threshold in (0.3, 0.5, 0.7):
        mask = rng.random((70, 90)) > threshold
        labels, n = label_components(mask)
        ref, n_ref = ndimage.label(mask)
        assert n == n_ref
        np.testing.assert_array_equal(labels, ref)


def test_labelling_is_four_connected():
    mask = np.array([[1, 0], [0, 1]], np.uint8) * 255
    assert label_components(mask)[1] == 2


@pytest.mark.parametrize("fraction,expected", [
    (0.00005, None), (0.0005, "tiny"), (0.01, "small"), (0.08, "small"), (0.1, "medium"),
    (0.3, "medium"), (0.31, "large")])
def test_size_classes(fraction, expected):
    assert size_class(fraction) == expected


def test_number_sizes_locations_and_bbox():
    mask = (disk(40, 40, 20) | disk(128, 220, 25) | disk(128, 128, 6)).astype(np.uint8) * 255
    d = describe_mask(mask)
    assert d.number == 3
    assert d.sizes == ("small",)
    assert d.locations == ("top left", "right", "center")  # raster order of first pixels
    assert d.bbox == [20, 20, 245, 153]  # one pixel of margin, x2/y2 exclusive


def test_location_falls_back_to_bbox_centre_when_spread():
    # a bar spanning the whole middle row of cells: three cells with >= 10 % each
    mask = ((YY > 110) & (YY < 140)).astype(np.uint8) * 255
    assert describe_mask(mask).locations == ("center",)
    # mostly in one cell with a sliver in its neighbour: the significant cell wins
    mask = disk(40, 40, 30) | ((YY > 38) & (YY < 42) & (XX < 100))
    assert describe_mask(mask).locations == ("top left",)


def test_large_and_mixed_sizes_in_order():
    mask = disk(128, 128, 90) | disk(10, 250, 2)
    assert describe_mask(mask).sizes == ("tiny", "large")


@pytest.mark.parametrize("mask,expected", [
    (disk(128, 128, 60), "circle"),
    (((YY - 128) / 40) ** 2 + ((XX - 128) / 52) ** 2 < 1, "round"),
    (((YY - 128) / 30) ** 2 + ((XX - 128) / 80) ** 2 < 1, "oval"),
    ((abs(YY - 128) < 40) & (abs(XX - 128) < 40), "square"),
    (np.abs(YY - 128) + np.abs(XX - 128) < 50, "square"),
    ((abs(YY - 128) < 20) & (abs(XX - 128) < 70), "rectangle"),
    ((YY > 60) & (YY < 200) & (abs(XX - 128) < (YY - 60) * 0.6), "triangular"),
    (((abs(YY - 128) < 70) & (abs(XX - 128) < 12)) | ((abs(YY - 128) < 12) & (abs(XX - 128) < 70)),
     "irregular"),
])
def test_shapes(mask, expected):
    assert shape_name(mask) == expected


def test_colour_is_nearest_palette_entry_of_median():
    img = np.zeros((20, 20, 3), np.uint8)
    img[:] = (230, 150, 160)
    img[0, 0] = (0, 0, 255)  # an outlier does not move the median
    assert colour_name(img, np.ones((20, 20), bool)) == "pink"
    gray = np.full((20, 20), 15, np.uint8)
    assert colour_name(gray, np.ones((20, 20), bool)) == "black"


def test_empty_mask():
    d = describe_mask(np.zeros((30, 40), np.uint8))
    assert (d.number, d.sizes, d.locations, d.shape, d.bbox) == (0, (), (), None, [40, 30, 0, 0])


def test_bad_mask_dimensions():
    with pytest.raises(ValueError, match="2-D"):
        describe_mask(np.zeros((2, 3, 4, 5)))
