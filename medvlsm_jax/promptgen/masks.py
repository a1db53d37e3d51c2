"""Attributes of a binary mask: connected components, number, size class, 3x3 grid location,
overall bounding box (the paper's a5, a4, a6 and ``bbox``), and the geometric replacements for
the paper's VQA answers: shape (a2) from mask geometry and colour (a3) from a fixed palette.

The number/size/location rules follow the original ``get_mask_description`` of the medvlsm
release (``scripts/features_from_img.py``):

* components: 4-connected foreground regions of ``mask > 127`` (scipy's default structure),
  numbered in raster order of their first pixel;
* size of a component from its area fraction ``f`` of the image:
  ``f > 0.30`` large, ``f > 0.08`` medium, ``f < 0.001`` tiny, otherwise small; components with
  ``f <= 0.0001`` get no size (they still count in the number and the location list), and the
  size attribute lists each size class present once, in the order tiny, small, medium, large;
* location of a component on a 3x3 grid (rows split at ``int(H/3)``, ``int(2H/3)``, columns
  at ``int(W/3)``, ``int(2W/3)``): the only cell it touches; else the only cell holding
  >= 10 % of its pixels; else the cell of the centre of its bounding box (thirds of H and W);
  one entry per component, in component order.

Differences from the original (documented in README.md): the original counted as foreground
only pixels equal to 255 when measuring sizes and cells (JPEG masks made that produce spurious
``top left`` entries) and compared the bounding-box centre's column with thirds of the *height*.
"""

from __future__ import annotations

import dataclasses

import numpy as np

GRID_NAMES = (("top left", "top", "top right"),
              ("left", "center", "right"),
              ("bottom left", "bottom", "bottom right"))
LOCATIONS = tuple(name for row in GRID_NAMES for name in row)
SIZES = ("tiny", "small", "medium", "large")
#: Area-fraction thresholds of the size classes (see module docstring).
LARGE_ABOVE, MEDIUM_ABOVE, TINY_BELOW, IGNORED_AT_MOST = 0.30, 0.08, 0.001, 0.0001
#: A cell "holds" a component when it has at least this fraction of its pixels.
SIGNIFICANT_CELL = 0.1


@dataclasses.dataclass(frozen=True)
class Component:
    """One connected component: pixel count and inclusive bounding box (rows, columns)."""
    area: int
    top: int
    left: int
    bottom: int
    right: int


def binarize(mask: np.ndarray) -> np.ndarray:
    """Foreground of a grayscale (H, W) or colour (H, W, C) mask: any channel above 127."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(axis=-1)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W) or (H, W, C), got shape {mask.shape}")
    return mask > 127 if mask.dtype != bool else mask


def _runs(fg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of foreground: (row, start, stop) arrays in raster order."""
    padded = np.zeros((fg.shape[0], fg.shape[1] + 2), np.int8)
    padded[:, 1:-1] = fg
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, stops = np.nonzero(step == -1)
    return rows, starts, stops


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected labelling like ``scipy.ndimage.label`` (labels 1..n in raster order, 0 =
    background), by union-find over horizontal runs: Python loops only over runs, not pixels."""
    fg = binarize(mask)
    rows, starts, stops = _runs(fg)
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_begin = np.searchsorted(rows, np.arange(fg.shape[0] + 2)).tolist()
    starts_l, stops_l = starts.tolist(), stops.tolist()
    for r in range(fg.shape[0] - 1):
        # sweep the sorted runs of rows r and r + 1, joining those sharing a column
        a, a_end = row_begin[r], row_begin[r + 1]
        b, b_end = a_end, row_begin[r + 2]
        while a < a_end and b < b_end:
            if starts_l[b] < stops_l[a] and starts_l[a] < stops_l[b]:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if stops_l[a] < stops_l[b]:
                a += 1
            else:
                b += 1
    labels = np.zeros(fg.shape, np.int32)
    root_label: dict[int, int] = {}
    for i in range(len(rows)):
        lab = root_label.setdefault(find(i), len(root_label) + 1)
        labels[rows[i], starts[i]:stops[i]] = lab
    return labels, len(root_label)


def components(labels: np.ndarray, n: int) -> list[Component]:
    """Area and inclusive bounding box of each labelled component 1..n (vectorised)."""
    rows, cols = np.nonzero(labels)
    lab = labels[rows, cols] - 1
    area = np.bincount(lab, minlength=n)
    big = np.iinfo(np.int64).max
    top = np.full(n, big); left = np.full(n, big)
    bottom = np.full(n, -1); right = np.full(n, -1)
    np.minimum.at(top, lab, rows); np.minimum.at(left, lab, cols)
    np.maximum.at(bottom, lab, rows); np.maximum.at(right, lab, cols)
    return [Component(int(area[i]), int(top[i]), int(left[i]), int(bottom[i]), int(right[i]))
            for i in range(n)]


def size_class(fraction: float) -> str | None:
    """Size class of a component covering ``fraction`` of the image (None: too small to name)."""
    if fraction <= IGNORED_AT_MOST:
        return None
    if fraction > LARGE_ABOVE:
        return "large"
    if fraction > MEDIUM_ABOVE:
        return "medium"
    return "tiny" if fraction < TINY_BELOW else "small"


def _third(value: float, extent: int) -> int:
    """0, 1, 2 for a coordinate in the first, middle (inclusive bounds) or last third."""
    return 0 if value < extent / 3 else (1 if value <= 2 * extent / 3 else 2)


def grid_location(component_mask: np.ndarray, comp: Component) -> str:
    """Location name of one component (rules in the module docstring)."""
    h, w = component_mask.shape
    row_edges = (0, int(h / 3), int(2 * h / 3), h)
    col_edges = (0, int(w / 3), int(2 * w / 3), w)
    row_sums = np.add.reduceat(component_mask, row_edges[:3], axis=0)
    cells = np.add.reduceat(row_sums, col_edges[:3], axis=1) / comp.area
    nonzero = np.argwhere(cells > 0)
    if len(nonzero) == 1:
        return GRID_NAMES[nonzero[0][0]][nonzero[0][1]]
    significant = np.argwhere(cells >= SIGNIFICANT_CELL)
    if len(significant) == 1:
        return GRID_NAMES[significant[0][0]][significant[0][1]]
    # centre of the bounding box of the component's border, as the original measured it
    centre_row = (max(comp.top - 1, 0) + comp.bottom + 1) / 2
    centre_col = (max(comp.left - 1, 0) + comp.right + 1) / 2
    return GRID_NAMES[_third(centre_row, h)][_third(centre_col, w)]


def overall_bbox(comps: list[Component], shape: tuple[int, int]) -> list[int]:
    """``[x1, y1, x2, y2]`` around all components, as the original ``mask_to_overall_bbox``
    computed it from component borders (one pixel of margin, clipped at the image's top/left);
    ``[W, H, 0, 0]`` for an empty mask, like the original."""
    h, w = shape
    if not comps:
        return [w, h, 0, 0]
    return [max(min(c.left for c in comps) - 1, 0), max(min(c.top for c in comps) - 1, 0),
            min(max(c.right for c in comps) + 1, w), min(max(c.bottom for c in comps) + 1, h)]


# ---------------------------------------------------------------- shape (a2), geometric
SHAPES = ("circle", "round", "oval", "square", "rectangle", "triangular", "irregular")
#: Shape rules, in order: solidity below IRREGULAR_SOLIDITY -> irregular; pixel area over the
#: minimum-area enclosing rectangle below TRIANGLE_FILL (a triangle fills 1/2, an ellipse pi/4)
#: -> triangular; above BOX_FILL -> square (elongation < SQUARE_ELONGATION) or rectangle;
#: otherwise elliptic: circle (elongation < CIRCLE_ELONGATION), round (< ROUND_ELONGATION), oval.
IRREGULAR_SOLIDITY, TRIANGLE_FILL, BOX_FILL = 0.80, 0.62, 0.88
SQUARE_ELONGATION, CIRCLE_ELONGATION, ROUND_ELONGATION = 1.3, 1.15, 1.5


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Monotone-chain convex hull (counter-clockwise, no repeated end point) of (N, 2) points."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return np.asarray(pts, float)

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.asarray(lower[:-1] + upper[:-1], float)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _min_rect_area(hull: np.ndarray) -> float:
    """Area of the smallest rectangle of pixels enclosing the pixel centres ``hull`` (a convex
    polygon), over the directions of its edges (rotating calipers; +1 for the pixels' extent)."""
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    u = hull[:, 0][None] * cos[:, None] + hull[:, 1][None] * sin[:, None]
    v = -hull[:, 0][None] * sin[:, None] + hull[:, 1][None] * cos[:, None]
    return float(np.min((np.ptp(u, axis=1) + 1) * (np.ptp(v, axis=1) + 1)))


def shape_name(component_mask: np.ndarray) -> str:
    """Shape word of one component from solidity, rectangle fill and elongation."""
    rows, cols = np.nonzero(component_mask)
    # the leftmost and rightmost pixel of every row span the convex hull of all pixels
    first = np.full(component_mask.shape[0], component_mask.shape[1])
    last = np.full(component_mask.shape[0], -1)
    np.minimum.at(first, rows, cols)
    np.maximum.at(last, rows, cols)
    r = np.nonzero(last >= 0)[0]
    lo, hi = first[r], last[r]
    centres = np.concatenate([np.stack([lo, r], 1), np.stack([hi, r], 1)])
    corners = np.concatenate([np.stack([lo, r], 1), np.stack([hi + 1, r], 1),
                              np.stack([lo, r + 1], 1), np.stack([hi + 1, r + 1], 1)])
    solidity = rows.size / _polygon_area(_convex_hull(corners))
    centre_hull = _convex_hull(centres)
    fill = rows.size / (_min_rect_area(centre_hull) if len(centre_hull) >= 3
                        else (np.ptp(rows) + 1) * (np.ptp(cols) + 1))
    eig = np.linalg.eigvalsh(np.cov(np.stack([cols, rows]).astype(float)) + np.eye(2) / 12)
    elongation = float(np.sqrt(eig[1] / eig[0]))
    if solidity < IRREGULAR_SOLIDITY:
        return "irregular"
    if fill < TRIANGLE_FILL:
        return "triangular"
    if fill > BOX_FILL:
        return "square" if elongation < SQUARE_ELONGATION else "rectangle"
    if elongation < CIRCLE_ELONGATION:
        return "circle"
    return "round" if elongation < ROUND_ELONGATION else "oval"


# ---------------------------------------------------------------- colour (a3), palette
#: Fixed palette (names from the paper's VQA answers); the region's median RGB gets the name of
#: the nearest entry (Euclidean distance in RGB).
PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240), "gray": (128, 128, 128), "black": (20, 20, 20),
    "red": (200, 40, 40), "pink": (235, 150, 160), "peach": (250, 200, 170),
    "orange": (235, 140, 40), "yellow": (230, 210, 80), "tan": (205, 175, 135),
    "brown": (135, 80, 45), "purple": (130, 60, 150), "blue": (50, 80, 200),
    "green": (60, 150, 60)}
COLOURS = tuple(PALETTE)


def colour_name(image: np.ndarray, fg: np.ndarray) -> str:
    """Palette name of the median colour of ``image`` (H, W[, C]) over the mask ``fg``."""
    pixels = np.asarray(image)[fg]
    if pixels.ndim == 1:
        pixels = np.repeat(pixels[:, None], 3, axis=1)
    median = np.median(pixels[:, :3].astype(float), axis=0)
    names = list(PALETTE)
    dist = np.linalg.norm(np.asarray([PALETTE[n] for n in names], float) - median, axis=1)
    return names[int(np.argmin(dist))]


# ---------------------------------------------------------------- everything at once
@dataclasses.dataclass(frozen=True)
class MaskDescription:
    """What the prompt templates need from one mask (and its image for the colour)."""
    number: int
    sizes: tuple[str, ...]
    locations: tuple[str, ...]
    bbox: list[int]
    shape: str | None
    colour: str | None


def describe_mask(mask: np.ndarray, image: np.ndarray | None = None) -> MaskDescription:
    """Number, sizes, locations and bbox of ``mask``; shape of its largest component and the
    colour of ``image`` under it (None for an empty mask or when no image is given)."""
    labels, n = label_components(mask)
    comps = components(labels, n)
    total = labels.size
    present = {size_class(c.area / total) for c in comps} - {None}
    sizes = tuple(s for s in SIZES if s in present)
    locations = tuple(grid_location((labels == i + 1).astype(np.int64), c)
                      for i, c in enumerate(comps))
    shape = colour = None
    if n:
        largest = int(np.argmax([c.area for c in comps])) + 1
        shape = shape_name(labels == largest)
        if image is not None:
            colour = colour_name(image, labels > 0)
    return MaskDescription(n, sizes, locations, overall_bbox(comps, labels.shape), shape, colour)
