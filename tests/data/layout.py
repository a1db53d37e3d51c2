"""Generated datasets in the medvlsm layout, shared by the data tests."""

from __future__ import annotations

import json
import pathlib

import numpy as np
from PIL import Image

from medvlsm_jax.data.registry import get_spec

SIZE = (24, 32)  # (height, width) of generated images


def write_pair(root: pathlib.Path, img_rel: str, mask_rel: str, rng: np.random.Generator,
               size: tuple[int, int] = SIZE, empty: bool = False) -> None:
    """A random image (format from its extension) and a 0/255 PNG mask with one rectangle."""
    h, w = size
    img_path, mask_path = root / img_rel, root / mask_rel
    img_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        img_path, format="JPEG" if img_path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    mask = np.zeros((h, w), np.uint8)
    if not empty:
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        mask[y:y + h // 3, x:x + w // 3] = 255
    Image.fromarray(mask).save(mask_path, format="PNG")


def write_dataset(root: pathlib.Path, name: str, anns: dict[str, list[dict]],
                  seed: int = 0) -> pathlib.Path:
    """Write ``root/name`` in the medvlsm layout: the given annotation files plus generated
    images/masks for every record, in the folders the registry names for each file."""
    spec = get_spec(name)
    folders = {s.ann_file: s for sources in spec.splits.values() for s in sources}
    rng = np.random.default_rng(seed)
    ds_root = root / name
    (ds_root / "anns").mkdir(parents=True, exist_ok=True)
    for ann_file, records in anns.items():
        (ds_root / "anns" / ann_file).write_text(json.dumps(records))
        src = folders.get(ann_file)
        for rec in records if src else ():
            write_pair(ds_root, f"{src.images_dir}/{rec['img_name']}",
                       f"{src.masks_dir}/{rec['mask_name']}", rng)
    return ds_root


def make_record(i: int, num_prompts: int = 10, ext: str = "png") -> dict:
    prompts = {f"p{k}": (f"prompt {k} of {i}" if k % 2 else [f"a{k} {i}", f"b{k} {i}"])
               for k in range(num_prompts)}
    prompts["p0"] = ""
    return {"img_name": f"{i}.{ext}", "mask_name": f"{i}.{ext}", "prompts": prompts}
