"""A tiny synthetic dataset (medvlsm layout, built with the real TFDS builder) for trainer tests."""

from __future__ import annotations

import importlib
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

SIZES = {"train": 8, "val": 4, "test": 4}


def write_tiny_dataset(root: pathlib.Path, name: str = "synthetic_polyp", seed: int = 0) -> pathlib.Path:
    """Bright discs on noise, non-square (40 x 52), prompts p0..p9; returns the manual dir."""
    rng = np.random.default_rng(seed)
    ds = root / name
    for sub in ("images", "masks", "anns"):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    h, w = 40, 52
    yy, xx = np.mgrid[:h, :w]
    for split, n in SIZES.items():
        records = []
        for i in range(n):
            cy, cx, r = rng.integers(12, h - 12), rng.integers(12, w - 12), rng.integers(6, 11)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
            img[mask] = (220, 120, 110)
            stem = f"{split}_{i}"
            Image.fromarray(img).save(ds / "images" / f"{stem}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(ds / "masks" / f"{stem}.png")
            prompts = {f"p{k}": f"a pink polyp {k}" for k in range(10)}
            prompts["p2"] = ["a round polyp", "one pink polyp"]
            records.append({"img_name": f"{stem}.png", "mask_name": f"{stem}.png", "prompts": prompts})
        (ds / "anns" / f"{split}.json").write_text(json.dumps(records))
    return root


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    from medvlsm_jax.data import build_dataset

    root = tmp_path_factory.mktemp("tiny_data")
    manual = write_tiny_dataset(root / "manual")
    data_dir = root / "tfds"
    build_dataset("synthetic_polyp", manual_dir=manual, data_dir=data_dir)
    return str(data_dir)


def tiny_config(data_dir: str, **train):
    """The tiny CLIPSeg at 32 px on the tiny dataset, a few steps, no progress bar."""
    from medvlsm_jax.config import load_config

    c = load_config("clipseg:dataset=synthetic_polyp,prompt=p1,variant=tiny,image_size=32,loss=corrected")
    c.data.data_dir = data_dir
    c.train.update(batch_size=4, num_epochs=2, min_epochs=1, progress=False, log_every_steps=1)
    c.train.update(**train)
    c.eval.update(batch_size=4, hd95=True, write_masks=True)
    return c


def monai11(module: str = "monai"):
    """MONAI 1.1 (medvlsm's version; later versions changed DiceCE and Dice on one channel), else skip."""
    monai = pytest.importorskip("monai")
    if not monai.__version__.startswith("1.1."):
        pytest.skip(f"MONAI {monai.__version__} installed; the reference is MONAI 1.1 (pip install monai==1.1.0)")
    return importlib.import_module(module)
