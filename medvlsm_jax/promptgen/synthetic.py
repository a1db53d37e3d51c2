"""Procedural stand-ins for the paper's datasets, in the medvlsm layout, for tests and smoke
training without any download:

* ``synthetic_polyp``: endoscopy-like pink/red mucosa (smooth shading, vignette, vessels) with
  0-3 polyp-like lesions: lighter, yellowish, dome-shaded, bumpy, with specular highlights;
  prompts of the polyp family (P0-P9; "no polyp" for images without lesion);
* ``synthetic_us``: grayscale ultrasound-like speckle with 0-3 dark hypoechoic lesions; smooth
  oval ones with posterior enhancement (``<id>_benign``), irregular ones with an acoustic shadow
  (``<id>_malignant``), none (``<id>_normal``); prompts of the BUSI family (P0-P6).

Prompts come from the masks through :func:`~.generate.generate_annotations`, the code path of
``medvlsm-prompts``. Everything is vectorised numpy; one seed fixes every pixel.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from .generate import generate_annotations

NAMES = ("synthetic_polyp", "synthetic_us")
#: Probabilities of 0, 1, 2, 3 lesions per image.
LESION_COUNT_P = (0.1, 0.55, 0.25, 0.1)


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a random ``cells x cells`` grid resized bicubically."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize(size[::-1], Image.BICUBIC)
    return np.clip(np.asarray(img), -1, 1)


def _lesion(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, irregular: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """(mask, normalised radius) of one lesion: a rotated ellipse whose boundary radius is
    modulated by a few random harmonics (strong and many for irregular lesions)."""
    h, w = yy.shape
    side = min(h, w)
    radius = side * rng.uniform(0.07, 0.2)
    cy, cx = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w)
    ratio, theta = rng.uniform(0.65, 1.0), rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / radius
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / (radius * ratio)
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    harmonics = np.arange(2, 9 if irregular else 5)
    amps = rng.uniform(0, 0.12 if irregular else 0.05, harmonics.size)
    phases = rng.uniform(0, 2 * np.pi, harmonics.size)
    edge = 1 + np.tensordot(amps, np.cos(harmonics[:, None, None] * phi + phases[:, None, None]),
                            axes=1)
    r = rho / edge
    return r < 1, r


def _polyp_image(rng: np.random.Generator, size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray, str]:
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    base = np.array([185, 85, 80], np.float32) + rng.uniform(-15, 15, 3)
    shade = 1 + 0.18 * _smooth_noise(rng, size, 4)
    vignette = 1 - 0.45 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2) * 4
    vessels = 0.12 * np.clip(np.sin(xx / w * rng.uniform(8, 16) + 6 * _smooth_noise(rng, size, 3)),
                             0.85, 1)
    img = base * (shade * vignette - vessels + 0.85 * 0.12)[..., None]
    mask = np.zeros(size, bool)
    for _ in range(rng.choice(4, p=LESION_COUNT_P)):
        inside, r = _lesion(rng, yy, xx, irregular=False)
        colour = np.array([235, 175, 140], np.float32) + rng.uniform(-20, 20, 3)
        dome = np.clip(1.15 - 0.45 * r ** 2, 0.6, 1.2)
        bumps = 1 + 0.08 * _smooth_noise(rng, size, 24)
        lesion = colour * (dome * bumps)[..., None]
        alpha = np.clip((1 - r) * 12, 0, 1)[..., None]
        img = img * (1 - alpha) + lesion * alpha
        mask |= inside
    glints = (_smooth_noise(rng, size, 32) > 0.93) & (rng.random(size) < 0.6)
    img[glints] = 250
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask, ""


def _us_image(rng: np.random.Generator, size: tuple[int, int]
              ) -> tuple[np.ndarray, np.ndarray, str]:
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    echo = 105 * (1 + 0.3 * _smooth_noise(rng, size, 5)) * (1 - 0.35 * yy / h)
    echo[: int(0.06 * h)] *= 0.6  # near-field band under the probe
    mask = np.zeros(size, bool)
    n = rng.choice(4, p=LESION_COUNT_P)
    kind = "normal" if n == 0 else ("malignant" if rng.random() < 0.4 else "benign")
    for _ in range(n):
        inside, r = _lesion(rng, yy, xx, irregular=kind == "malignant")
        # posterior enhancement (benign) or acoustic shadow (malignant) below the lesion,
        # weighted by the lesion's thickness in each column
        thickness = np.convolve(inside.sum(axis=0) / inside.sum(axis=0).max(), np.ones(9) / 9,
                                mode="same")
        bottom = h - np.argmax(inside[::-1], axis=0)
        below = (yy > bottom[None]) * thickness[None]
        echo = echo * (1 + (0.3 if kind == "benign" else -0.3) * below)
        echo = echo * (1 - 0.8 * np.clip((1 - r) * 6, 0, 1))
        mask |= inside
    speckle = 0.4 + 0.6 * rng.rayleigh(0.8, size)
    img = np.clip(echo * speckle, 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2), mask, kind


def write_synthetic_dataset(root: str | pathlib.Path, name: str = "synthetic_polyp",
                            n_train: int = 200, n_val: int = 50, n_test: int = 50,
                            seed: int = 0, size: tuple[int, int] = (256, 256)) -> pathlib.Path:
    """Write ``<root>/<name>/{images,masks}/*.png`` and ``anns/{train,val,test}.json`` (the
    medvlsm schema, prompts rendered from the masks) and return ``<root>/<name>``. Images
    0..n_train-1 are train, the next n_val val, the rest test; deterministic in ``seed``."""
    if name not in NAMES:
        raise ValueError(f"unknown synthetic dataset {name!r}; use one of {NAMES}")
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise ValueError("split sizes must be non-negative and not all zero")
    out = pathlib.Path(root) / name
    images, masks = out / "images", out / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    draw = _polyp_image if name == "synthetic_polyp" else _us_image
    split = {}
    for i in range(n_train + n_val + n_test):
        img, mask, kind = draw(np.random.default_rng([seed, i]), size)
        file = f"{i:04d}_{kind}.png" if kind else f"{i:04d}.png"
        Image.fromarray(img).save(images / file, compress_level=1)
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / file, compress_level=1)
        split[file] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    generate_annotations(name, images, masks, out / "anns", split=split, allow_empty=True)
    return out
