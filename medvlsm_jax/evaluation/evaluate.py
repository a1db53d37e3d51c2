"""Test-split evaluation: masks at original size, per-image CSV, results JSON and table.

How predictions reach the original size (``resize``):

* ``nearest_mask`` (default, the original's): ``BaseModule.step`` binarises
  ``sigmoid(logits) > threshold`` at model resolution; ``src/eval.py`` resizes that binary mask
  to ``(height, width)`` with ``TF.resize(pred.double(), NEAREST_EXACT)`` (torch's double index
  arithmetic, reproduced by :func:`medvlsm_jax.ops.resize.nearest_indices`) and saves it, and
  ``scripts/eval_metrics.py`` reads the saved masks and the original masks with
  ``cv2.imread(IMREAD_GRAYSCALE)``, counts pixels ``> 0`` as foreground and scores them with
  MONAI ``compute_dice`` / ``compute_iou``. The ground truth here is the same
  (:func:`medvlsm_jax.data.masks.ground_truth`, ``gt_threshold`` 0); the predictions are scored
  as computed, i.e. as if saved losslessly (docs/FIDELITY.md: ``src/eval.py`` names the file
  after the mask, so a Kvasir prediction would be a JPEG).
* ``bilinear_probs``: bilinear resize of the probabilities (torch ``F.interpolate``,
  ``align_corners=False``), then threshold — what :meth:`medvlsm_jax.api.Segmenter.predict`
  does.

Per dataset we report mean ± sample std (ddof=1) of Dice, IoU and HD95 over its images, as the
paper's tables. Files under ``out_dir``: ``masks/<mask_name>`` (0/255 PNG), ``overlays/*.png``
(first N images: prediction in red, ground-truth outline in green), ``per_image.csv``,
``results.json``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from PIL import Image

from medvlsm_jax.data import io as data_io
from medvlsm_jax.data.registry import DATASETS
from medvlsm_jax.data.sources import original_mask, raw_source, source_key
from medvlsm_jax.ops.resize import resize
from medvlsm_jax.evaluation import metrics
from medvlsm_jax.evaluation.visualize import overlay

RESIZE_MODES = ("nearest_mask", "bilinear_probs")
METRICS = ("dice", "iou", "hd95")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float32)))


def to_original_size(logits: np.ndarray, size: tuple[int, int], threshold: float, mode: str) -> np.ndarray:
    """Binary (H, W) prediction at ``size`` from model-resolution logits (see module doc)."""
    probs = _sigmoid(np.asarray(logits))
    if mode == "nearest_mask":
        binary = (probs > threshold).astype(np.uint8)
        up = resize(jnp.asarray(binary)[None, ..., None], size, method="nearest-exact", compute_dtype="float64")
        return np.asarray(up)[0, ..., 0] > 0
    if mode == "bilinear_probs":
        return np.asarray(resize(jnp.asarray(probs)[None, ..., None], size, method="bilinear"))[0, ..., 0] > threshold
    raise ValueError(f"unknown resize mode {mode!r}; choose from {', '.join(RESIZE_MODES)}")


def evaluate_loader(predict: Callable[[dict[str, np.ndarray]], np.ndarray], loader: Iterable[dict[str, Any]], *,
                    split: str, data_dir: str | None, threshold: float, resize_mode: str, out_dir: str,
                    write_masks: bool = True, with_hd95: bool = True, overlays: int = 0,
                    progress: bool = False, gt_threshold: int = 0) -> dict[str, Any]:
    """Scores every valid example of ``loader`` against its original-size mask (the mask's
    OpenCV grayscale ``> gt_threshold``; 0 as the original).

    ``predict(batch)`` returns model-resolution logits (B, H, W) for the batch's rows. Returns
    ``{"per_dataset": {name: {metric: summary}}, "rows": [...]}`` and writes the files.
    """
    os.makedirs(out_dir, exist_ok=True)
    rows: list[dict[str, Any]] = []
    key = source_key(data_dir)
    bar = tqdm.tqdm(desc=f"evaluating {split}", unit="img", disable=not progress, leave=False)
    for batch in loader:
        logits = predict(batch)
        for r in np.flatnonzero(batch["valid"]):
            name, index = DATASETS[int(batch["dataset_id"][r])], int(batch["index"][r])
            target = original_mask(name, split, index, data_dir, threshold=gt_threshold)
            pred = to_original_size(logits[r], target.shape, threshold, resize_mode)
            mask_name = str(batch["mask_name"][r])
            row = {"dataset": name, "index": index, "img_name": str(batch["img_name"][r]),
                   "mask_name": mask_name, "prompt": str(batch["prompt"][r]),
                   **metrics.image_metrics(pred, target, with_hd95=with_hd95)}
            if write_masks:
                path = os.path.join(out_dir, "masks", mask_name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(pred.astype(np.uint8) * 255).save(os.path.splitext(path)[0] + ".png")
            if len(rows) < overlays:
                image = data_io.decode_image(raw_source(name, split, key)[index]["image"])
                path = os.path.join(out_dir, "overlays", f"{os.path.splitext(os.path.basename(mask_name))[0]}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                overlay(image, pred, target).save(path)
            rows.append(row)
            bar.update(1)
    bar.close()
    rows = gather_rows(rows, out_dir, split)
    return {"per_dataset": summarize_rows(rows), "rows": rows}


def gather_rows(rows: list[dict[str, Any]], out_dir: str, tag: str) -> list[dict[str, Any]]:
    """Every process's rows (multi-process evaluation shards the test split), each example
    once, in the single-process order: by dataset (catalogue order), then record index.

    Rows go through the shared ``out_dir`` (the workdir must be shared by the hosts, as Orbax
    checkpoints already require): each process writes its own, all wait at a barrier, then each
    reads all of them; after a second barrier each removes its file. A single process returns
    ``rows`` unchanged.
    """
    n = jax.process_count()
    if n == 1:
        return rows
    from jax.experimental import multihost_utils  # noqa: PLC0415

    path = lambda i: os.path.join(out_dir, f".rows-{tag}-p{i}.json")  # noqa: E731
    with open(path(jax.process_index()), "w") as f:
        json.dump(rows, f, default=float)
    multihost_utils.sync_global_devices(f"medvlsm-eval-rows-{tag}")
    merged = []
    for i in range(n):
        with open(path(i)) as f:
            merged += json.load(f)
    multihost_utils.sync_global_devices(f"medvlsm-eval-rows-read-{tag}")
    os.remove(path(jax.process_index()))
    seen = [(r["dataset"], r["index"]) for r in merged]
    if len(set(seen)) != len(seen):
        raise RuntimeError(f"{tag}: an example was scored by more than one process")
    return sorted(merged, key=lambda r: (DATASETS.index(r["dataset"]), r["index"]))


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean ± std per dataset of each metric present in ``rows``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == name]
        out[name] = {m: metrics.summarize([r[m] for r in sub]) for m in METRICS if m in sub[0]}
    return out


def format_table(per_dataset: dict[str, dict[str, dict[str, float]]]) -> str:
    """A Markdown table: dataset | n | Dice | IoU | HD95 (mean ± std; Dice/IoU in %)."""
    lines = ["| dataset | n | Dice (%) | IoU (%) | HD95 (px) |", "|---|---|---|---|---|"]
    for name, m in per_dataset.items():
        cells = []
        for k, scale in (("dice", 100.0), ("iou", 100.0), ("hd95", 1.0)):
            s = m.get(k)
            cells.append("-" if s is None else f"{scale * s['mean']:.2f} ± {scale * s['std']:.2f}")
        lines.append(f"| {name} | {m['dice']['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(results: dict[str, dict[str, Any]], out_dir: str) -> dict[str, str]:
    """``per_image.csv``, ``results.json`` and ``results.md`` for every evaluated set."""
    os.makedirs(out_dir, exist_ok=True)
    rows = [r for res in results.values() for r in res["rows"]]
    per_dataset = {k: v for res in results.values() for k, v in res["per_dataset"].items()}
    paths = {"csv": os.path.join(out_dir, "per_image.csv"), "json": os.path.join(out_dir, "results.json"),
             "table": os.path.join(out_dir, "results.md")}
    if rows:
        with open(paths["csv"], "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    with open(paths["json"], "w") as f:
        json.dump(per_dataset, f, indent=2)
    with open(paths["table"], "w") as f:
        f.write(format_table(per_dataset) + "\n")
    return paths
