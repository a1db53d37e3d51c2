"""What the mask decodings of docs/FIDELITY.md do to the reported Dice, on a JPEG-mask set.

The synthetic polyp set (``medvlsm_jax.promptgen.synthetic``) with its masks saved as 3-channel
JPEGs (quality 75 by default, like Kvasir-SEG's ``.jpg`` masks) is built once; the quick-start
model (``configs/demo.py``) is trained on it twice, with the settings of builds before 2.0.0
(``data.mask_target=binary``, ``eval.gt_threshold=127``) and with the defaults (``soft``, 0);
each trained model is then scored against both ground truths, and its predictions are also
scored the way the original's ``src/eval.py`` would leave them for a ``.jpg`` mask name
(``torchvision.utils.save_image`` to ``.jpg``, read back with ``cv2.imread(IMREAD_GRAYSCALE)``
``> 0``). The quick-start model predicts in 32-pixel blocks at 256², aligned with JPEG's 8x8
grid, so its round trip is lossless; the "exact mask" rows run the ground truth's own binary
mask (``> 127``) through the same round trip instead. Needs torch, torchvision and
opencv-python-headless (the ``test`` extra). A rerun reuses finished trainings.

``python -m benchmarks.jpeg_masks --out /tmp/jpeg_masks [--quality 75] [--epochs 40]``
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

import numpy as np
from PIL import Image


def make_jpeg_mask_set(manual: pathlib.Path, quality: int, seed: int = 0) -> pathlib.Path:
    """The synthetic polyp set under ``manual`` with every mask re-saved as an RGB JPEG."""
    from medvlsm_jax.promptgen.synthetic import write_synthetic_dataset

    root = manual / "synthetic_polyp"
    if root.exists():
        shutil.rmtree(root)
    write_synthetic_dataset(manual, name="synthetic_polyp", seed=seed, n_train=200, n_val=50, n_test=50)
    for ann in sorted((root / "anns").glob("*.json")):
        records = json.loads(ann.read_text())
        for rec in records:
            png = root / "masks" / rec["mask_name"]
            rec["mask_name"] = str(pathlib.Path(rec["mask_name"]).with_suffix(".jpg"))
            gray = np.asarray(Image.open(png).convert("L"))
            Image.fromarray(np.repeat(gray[..., None], 3, -1)).save(root / "masks" / rec["mask_name"], quality=quality)
            png.unlink()
        ann.write_text(json.dumps(records))
    return root


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    from medvlsm_jax.evaluation import metrics

    return float(metrics.dice_iou(pred, gt)[0])


def originals_jpeg_round_trip(pred: np.ndarray, path: pathlib.Path) -> np.ndarray:
    """``src/eval.py`` saving a prediction under a ``.jpg`` mask name, read back by
    ``eval_metrics.py``: ``save_image(pred.double(), 'x.jpg')``, ``cv2.imread(GRAYSCALE) > 0``."""
    import cv2
    import torch
    import torchvision

    torchvision.utils.save_image(torch.from_numpy(pred[None]).double(), str(path))
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0


def score(workdir: pathlib.Path, manual_root: pathlib.Path, tmp: pathlib.Path) -> dict[str, float]:
    """Mean Dice of the evaluated predictions (``eval/.../masks/*.png``) against each ground truth."""
    import cv2

    out: dict[str, list[float]] = {"gt>0": [], "gt>127": [], "gt>0, pred via .jpg": [],
                                   "exact mask vs gt>0": [], "exact mask via .jpg vs gt>0": []}
    n_gt_differs = 0
    for pred_png in sorted((workdir / "eval" / "synthetic_polyp" / "masks").glob("*.png")):
        pred = np.asarray(Image.open(pred_png)) > 0
        gray = cv2.imread(str(manual_root / "masks" / f"{pred_png.stem}.jpg"), cv2.IMREAD_GRAYSCALE)
        n_gt_differs += bool(((gray > 0) != (gray > 127)).any())
        out["gt>0"].append(dice(pred, gray > 0))
        out["gt>127"].append(dice(pred, gray > 127))
        out["gt>0, pred via .jpg"].append(dice(originals_jpeg_round_trip(pred, tmp / f"{pred_png.stem}.jpg"), gray > 0))
        out["exact mask vs gt>0"].append(dice(gray > 127, gray > 0))
        exact = originals_jpeg_round_trip(gray > 127, tmp / f"{pred_png.stem}_exact.jpg")
        out["exact mask via .jpg vs gt>0"].append(dice(exact, gray > 0))
    return {**{k: float(np.mean(v)) for k, v in out.items()}, "n": len(out["gt>0"]),
            "images whose ground truth differs": n_gt_differs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    from medvlsm_jax.config import load_config
    from medvlsm_jax.data.sources import build_dataset
    from medvlsm_jax.train import loop

    manual, data_dir = args.out / "manual", args.out / "tfds"
    summary = args.out / "results.json"
    done = json.loads(summary.read_text()) if summary.exists() else {}
    if done.get("quality") != args.quality or done.get("epochs") != args.epochs:
        done = {}
        make_jpeg_mask_set(manual, args.quality)
        shutil.rmtree(data_dir, ignore_errors=True)
        build_dataset("synthetic_polyp", manual_dir=manual, data_dir=data_dir)
    root = manual / "synthetic_polyp"
    (args.out / "roundtrip").mkdir(exist_ok=True)
    results = {"quality": args.quality, "epochs": args.epochs}
    for name, (target, gt) in {"old (binary, gt>127)": ("binary", 127), "new default (soft, gt>0)": ("soft", 0)}.items():
        c = load_config("demo")
        c.data.data_dir, c.data.mask_target, c.eval.gt_threshold = str(data_dir), target, gt
        c.train.update(num_epochs=args.epochs, progress=False)
        c.eval.update(overlays=0, hd95=False)
        workdir = args.out / target
        if name in done:
            trained = {k: done[name][k] for k in ("reported test Dice", "best val Dice", "best epoch")}
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            run = loop.train_and_evaluate(c, str(workdir))
            trained = {"reported test Dice": run["results"]["synthetic_polyp"]["per_dataset"]["synthetic_polyp"]["dice"]["mean"],
                       "best val Dice": run["meta"]["best_dice"], "best epoch": run["meta"]["best_epoch"]}
        results[name] = {**trained, **score(workdir, root, args.out / "roundtrip")}
        print(name, json.dumps(results[name], indent=1), flush=True)
        summary.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
