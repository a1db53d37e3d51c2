"""CLIPSeg throughput curves: img/s against batch size and against image size, PNG + tables.

    python -m medvlsm_jax.bench.curves [--batches 1,2,4,8] [--sizes 224,352,416,512] [--size-batch 4]
        [--modes inference,frozen] [--dtypes fp32] [--variant base] [--iters 3] [--torch]
        [--out benchmarks/results]      (also: medvlsm-bench curves ...)

Each point is a row of ``medvlsm-bench models`` (same method: compile apart, median of
waited-for steps). Plots are drawn with PIL (no plotting dependency): one line per
(implementation, mode, dtype), x on a log2 scale for batch sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Any, Sequence

from PIL import Image, ImageDraw

from medvlsm_jax.bench import bench, harness

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
Series = dict[str, list[tuple[float, float]]]


def line_plot(series: Series, title: str, xlabel: str, ylabel: str, path: str, *, log2_x: bool = False,
              size: tuple[int, int] = (720, 440)) -> str:
    """A minimal line plot (axes, ticks at the data's x values, legend) saved as PNG."""
    w, h = size
    left, right, top, bottom = 70, 190, 40, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ys = [y for pts in series.values() for _, y in pts]
    if not xs:
        raise ValueError(f"nothing to plot for {title!r}")
    fx = (lambda x: math.log2(x)) if log2_x else (lambda x: x)
    x0, x1 = fx(xs[0]), fx(xs[-1]) if len(xs) > 1 else fx(xs[0]) + 1
    y1 = max(ys) * 1.1 or 1.0

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (fx(x) - x0) / (x1 - x0) * (w - left - right), h - bottom - y / y1 * (h - top - bottom))

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for x in xs:
        X, _ = px(x, 0)
        d.line([X, h - bottom, X, h - bottom + 4], fill="black")
        d.text((X - 8, h - bottom + 8), f"{x:g}", fill="black")
    for i in range(6):
        y = y1 * i / 5
        _, Y = px(xs[0], y)
        d.line([left - 4, Y, left, Y], fill="black")
        d.line([left, Y, w - right, Y], fill=(230, 230, 230))
        d.text((4, Y - 6), f"{y:.3g}", fill="black")
    for k, (label, pts) in enumerate(sorted(series.items())):
        color = PALETTE[k % len(PALETTE)]
        pts = sorted(pts)
        coords = [px(x, y) for x, y in pts]
        if len(coords) > 1:
            d.line(coords, fill=color, width=2)
        for X, Y in coords:
            d.ellipse([X - 3, Y - 3, X + 3, Y + 3], fill=color)
        d.line([w - right + 10, top + 10 + 16 * k, w - right + 30, top + 10 + 16 * k], fill=color, width=3)
        d.text((w - right + 35, top + 4 + 16 * k), label, fill="black")
    d.text((left, 12), title, fill="black")
    d.text(((left + w - right) // 2 - 30, h - 20), xlabel, fill="black")
    d.text((4, top - 18), ylabel, fill="black")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    img.save(path)
    return path


def series_of(rows: list[dict[str, Any]], x_key: str) -> Series:
    """img/s per (impl, mode, dtype) against ``x_key`` (rows with an error are left out)."""
    out: Series = {}
    for r in rows:
        if "img_per_s" in r:
            out.setdefault(f"{r['impl']} {r['mode']} {r['dtype']}", []).append((r[x_key], r["img_per_s"]))
    return out


def curve_table(rows: list[dict[str, Any]], x_key: str) -> str:
    body = [[r[x_key], r["impl"], r["mode"], r["dtype"], r.get("img_per_s"), r.get("mfu"), r.get("compile_s"),
             r.get("error") or r.get("skipped") or ""] for r in rows]
    return harness.markdown_table([x_key, "impl", "mode", "dtype", "img/s", "MFU", "compile s", "note"], body)


def run_curves(spec: bench.Spec, batches: Sequence[int], sizes: Sequence[int], size_batch: int
               ) -> dict[str, list[dict[str, Any]]]:
    """Rows for the batch sweep (at ``spec.size``) and the image-size sweep (at ``size_batch``)."""
    def rows(s: bench.Spec) -> list[dict[str, Any]]:
        return bench.run_flax(s) + (bench.run_torch(s) if s.torch else [])

    by_batch = rows(bench.Spec(**{**dataclasses.asdict(spec), "batches": list(batches)}))
    by_size = [r for size in sizes for r in rows(bench.Spec(**{**dataclasses.asdict(spec), "batches": [size_batch], "size": size}))]
    return {"batch": by_batch, "size": by_size}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="medvlsm-bench curves", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=bench.csv_arg(int), default=[1, 2, 4, 8])
    p.add_argument("--size", type=int, default=352, help="image size of the batch sweep")
    p.add_argument("--sizes", type=bench.csv_arg(int), default=[224, 352, 416, 512])
    p.add_argument("--size-batch", type=int, default=4, help="batch size of the image-size sweep")
    p.add_argument("--modes", type=bench.csv_arg(), default=["inference", "frozen"])
    p.add_argument("--dtypes", type=bench.csv_arg(), default=["fp32"])
    p.add_argument("--variant", default="base")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--torch", action="store_true", help="add the PyTorch reference curves")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    spec = bench.Spec(models=["clipseg"], variant=a.variant, modes=a.modes, size=a.size, dtypes=a.dtypes,
                      warmup=a.warmup, iters=a.iters, torch=a.torch)
    curves = run_curves(spec, a.batches, a.sizes, a.size_batch)
    tables = {"batch": curve_table(curves["batch"], "batch"), "size": curve_table(curves["size"], "size")}
    text = (f"## CLIPSeg img/s vs batch size ({a.size}x{a.size})\n\n{tables['batch']}\n\n"
            f"## CLIPSeg img/s vs image size (batch {a.size_batch})\n\n{tables['size']}\n")
    print(text)
    result = {"benchmark": "curves", "env": harness.environment(), "spec": dataclasses.asdict(spec), **curves}
    if not a.no_write:
        out_dir = harness.results_dir(a.out)
        harness.write_result("curves", result, out_dir)
        harness.write_markdown("curves", text, out_dir)
        for key, xlabel, log2 in (("batch", "batch size", True), ("size", "image size (px)", False)):
            line_plot(series_of(curves[key], key), f"CLIPSeg img/s vs {xlabel} ({harness.environment()['device']})",
                      xlabel, "img/s", os.path.join(out_dir, f"curves_{key}.png"), log2_x=log2)
        print(f"wrote {out_dir}/curves.{{json,md}}, curves_batch.png, curves_size.png")
    return result


if __name__ == "__main__":
    main()
