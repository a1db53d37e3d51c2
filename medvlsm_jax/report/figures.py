"""The paper's figures from a sweep store (matplotlib, Agg backend, PNG).

* Fig. 2 — test Dice by prompt, one panel per dataset, one line per model and setting
  (zero-shot dashed, finetuned solid);
* Fig. 3 — relative Dice change per swapped attribute, ``(swapped - original) / original`` in
  %, averaged over the datasets it was measured on, one bar per model (one panel per swap mode);
* overlays — for every model and dataset of Table 3, the best and the worst test image by Dice:
  the prediction (red) and the ground-truth outline (green) on the image.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medvlsm_jax.report.tables import (IMAGE_ONLY, POOLED, _best_by_val, _order_datasets,  # noqa: E402
                                       _order_models, model_name)


def _prompt_index(p: str) -> int:
    return int(p[1:]) if p[1:].isdigit() else -1


def fig2(results: list[dict[str, Any]], path: str) -> str | None:
    """Dice by prompt per model and dataset; ``None`` when no run has a prompt key."""
    series: dict[str, dict[tuple[str, str], dict[int, float]]] = {}
    for r in results:
        if (r["kind"] not in ("train", "zeroshot") or not r["prompt"].startswith("p") or r["dataset"] in POOLED
                or r["model"] in IMAGE_ONLY):
            continue
        dice = r["results"].get(r["dataset"], {}).get("dice")
        if dice is None:
            continue
        setting = "zero-shot" if r["kind"] == "zeroshot" else ("frozen" if "frozen" in r.get("settings", ())
                                                                and "finetune" not in r.get("settings", ())
                                                                else "finetuned")
        series.setdefault(r["dataset"], {}).setdefault((r["model"], setting), {})[_prompt_index(r["prompt"])] = \
            100 * dice["mean"]
    if not series:
        return None
    datasets = _order_datasets(series)
    cols = min(4, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    models = _order_models(m for per in series.values() for m, _ in per)
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    styles = {"zero-shot": "--", "finetuned": "-", "frozen": ":"}
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    legend = {}
    for ax, ds in zip(axes.flat, datasets):
        for (model, setting), points in sorted(series[ds].items(), key=lambda kv: (_order_models([kv[0][0]]), kv[0][1])):
            xs = sorted(points)
            (line,) = ax.plot(xs, [points[x] for x in xs], marker="o", linestyle=styles[setting],
                              color=colours[model])
            legend.setdefault(f"{model_name(model)} {setting}", line)
        ticks = sorted({x for pts in series[ds].values() for x in pts})
        ax.set_title(ds)
        ax.set_xlabel("prompt")
        ax.set_ylabel("Dice (%)")
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"P{x}" for x in ticks])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(4, len(legend)), frameon=False)
    fig.suptitle("Fig. 2 — test Dice by prompt")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def swap_deltas(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """mode -> attribute -> model -> relative Dice changes (%) over the swap runs' test sets."""
    by_id = {r["id"]: r for r in results}
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in results:
        if r["kind"] != "swap":
            continue
        base = by_id.get(r["spec"]["depends"])
        if base is None:
            continue
        swap = r["spec"]["swap"]
        for ds, m in r["results"].items():
            b = base["results"].get(ds, {}).get("dice")
            if b is None or not b["mean"]:
                continue
            delta = 100 * (m["dice"]["mean"] - b["mean"]) / b["mean"]
            out.setdefault(swap["mode"], {}).setdefault(swap["attribute"], {}).setdefault(r["model"], []).append(delta)
    return out


def fig3(results: list[dict[str, Any]], path: str) -> str | None:
    deltas = swap_deltas(results)
    if not deltas:
        return None
    modes = sorted(deltas)
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 3.6), squeeze=False)
    for ax, mode in zip(axes.flat, modes):
        attrs = sorted(deltas[mode])
        models = _order_models(m for a in attrs for m in deltas[mode][a])
        width = 0.8 / max(len(models), 1)
        for i, model in enumerate(models):
            vals = [float(np.mean(deltas[mode][a][model])) if model in deltas[mode][a] else np.nan for a in attrs]
            ax.bar(np.arange(len(attrs)) + i * width, vals, width, label=model_name(model))
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(attrs)) + width * (len(models) - 1) / 2)
        ax.set_xticklabels(attrs, rotation=30, ha="right")
        ax.set_ylabel("relative ΔDice (%)")
        ax.set_title(f"swap: {mode.replace('_', ' ')}")
        ax.legend(frameon=False)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Fig. 3 — relative Dice change per swapped attribute")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- overlays


def _rows(run_dir: str, eval_dir: str, dataset: str) -> list[dict[str, str]]:
    path = os.path.join(run_dir, eval_dir, "per_image.csv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if r["dataset"] == dataset]


def _overlay(result: dict[str, Any], run_dir: str, row: dict[str, str], data_dir: str | None) -> np.ndarray | None:
    from medvlsm_jax.data import sources  # noqa: PLC0415
    from medvlsm_jax.data import io as data_io  # noqa: PLC0415
    from medvlsm_jax.evaluation.visualize import overlay  # noqa: PLC0415

    mask_path = os.path.join(run_dir, result["eval_dir"], row["dataset"], "masks",
                             os.path.splitext(row["mask_name"])[0] + ".png")
    if not os.path.isfile(mask_path):
        return None
    key = sources.source_key(data_dir)
    try:
        image = data_io.decode_image(sources.raw_source(row["dataset"], "test", key)[int(row["index"])]["image"])
        target = sources.original_mask(row["dataset"], "test", int(row["index"]), data_dir).astype(bool)
    except Exception:  # noqa: BLE001 - data not built here: no overlay
        return None
    pred = np.asarray(Image.open(mask_path)) > 0
    return np.asarray(overlay(image, pred, target))


def overlays(results: list[dict[str, Any]], runs_dir: str, out_dir: str, data_dir: str | None = None
             ) -> tuple[list[str], list[str]]:
    """One PNG per dataset of Table 3's runs: rows = models, columns = best / worst image.
    Returns (paths, notes)."""
    from medvlsm_jax.report.tables import TRAIN_SETTINGS  # noqa: PLC0415

    groups: dict[tuple[str, str], list] = {}
    for r in results:
        if r["kind"] == "train" and set(r.get("settings", ())) & TRAIN_SETTINGS and r["dataset"] not in POOLED:
            groups.setdefault((r["dataset"], r["model"]), []).append(r)
    paths, notes = [], []
    os.makedirs(out_dir, exist_ok=True)
    for ds in _order_datasets(d for d, _ in groups):
        panels = []
        for model in _order_models(m for d, m in groups if d == ds):
            best = _best_by_val(groups[(ds, model)])
            run_dir = os.path.join(runs_dir, best["id"])
            rows = sorted((r for r in _rows(run_dir, best["eval_dir"], ds) if r["dice"] not in ("", "nan")),
                          key=lambda r: float(r["dice"]))
            if not rows:
                continue
            ddir = data_dir or best["repro"]["config"]["data"].get("data_dir") or None
            pair = [(rows[-1], "best"), (rows[0], "worst")]
            images = [(_overlay(best, run_dir, row, ddir), tag, float(row["dice"])) for row, tag in pair]
            if any(img is None for img, _, _ in images):
                notes.append(f"{ds}/{model}: no overlay (masks not written or dataset not built here)")
                continue
            panels.append((model, images))
        if not panels:
            continue
        fig, axes = plt.subplots(len(panels), 2, figsize=(5, 2.5 * len(panels)), squeeze=False)
        for (model, images), row_axes in zip(panels, axes):
            for ax, (img, tag, dice) in zip(row_axes, images):
                ax.imshow(img)
                ax.set_title(f"{model_name(model)} {tag}: Dice {100 * dice:.1f}", fontsize=9)
                ax.axis("off")
        fig.suptitle(f"{ds}\nprediction red, ground truth green", fontsize=9)
        fig.tight_layout()
        path = os.path.join(out_dir, f"overlays_{ds}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths, notes
