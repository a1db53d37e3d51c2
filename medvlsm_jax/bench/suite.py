"""``medvlsm-bench suite``: the GPU check's rows, most important first, under a time budget.

    medvlsm-bench suite [--budget 300] [--dry-run] [--only NAME,NAME] [--data-root DIR] [--out DIR]

One process runs the rows of :func:`rows_for` in order (bf16 train steps against PyTorch AMP
first; then the 90-epoch headline run, the forward, the attention numerics, torch.compile, the
levers switched off, larger batches, the compile-time comparison, fp32/TF32, a rerun of the
headline with the warm compilation cache, CRIS). Each finished row is appended to ``suite_rows.jsonl`` and the
``suite.json`` / ``suite.md`` summaries are rewritten at once, so a run cut short keeps every
finished row.

The budget is *measured*, not guessed: before a row starts its cost is predicted from what the
rows before it measured — seconds per compiled executable (before the first measurement: 30 s on
a GPU, the low end of the 22–50 s one XLA compile took there before this change, 10 s on CPU),
the Flax step time, the PyTorch/Flax step ratio — and a row that would not fit in what is left
is skipped with its prediction recorded. ``--dry-run``: the tiny model at 32 px, one timed step
per row, the 2-epoch tiny headline run (CPU, for checking the script).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import traceback
from typing import Any, Callable

import jax
import numpy as np

from medvlsm_jax.bench import bench, harness


@dataclasses.dataclass
class Settings:
    variant: str
    size: int
    batch: int
    big_batch: int
    iters: int
    warmup: int
    headline: list[str]  # medvlsm-bench headline arguments
    cris_size: int
    cris_batch: int


GPU = Settings("base", 352, 32, 128, 10, 2, ["--workers", "0,8,16", "--grain-batches", "10"], 416, 16)
DRY = Settings("tiny", 32, 2, 4, 1, 0, ["--variant", "tiny", "--epochs", "2", "--workers", "0", "--grain-batches", "2",
                                        "--pool", "2"], 32, 2)


class Budget:
    """Time left and the measured costs that predict the next row."""

    def __init__(self, seconds: float, gpu: bool):
        self.start, self.seconds = time.perf_counter(), seconds
        self.compile_prior = 30.0 if gpu else 10.0
        self.compiles: list[float] = []  # seconds per executable, measured
        self.flax_step: dict[str, float] = {}  # mode -> seconds per step at the standard batch
        self.torch_ratio: list[float] = []  # torch step / flax step, same row

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def per_compile(self) -> float:
        """Seconds per executable: the median measured so far (the prior before any)."""
        return statistics.median(self.compiles) if self.compiles else self.compile_prior

    def step(self, mode: str) -> float:
        if mode in self.flax_step:
            return self.flax_step[mode]
        return max(self.flax_step.values()) if self.flax_step else 1.0

    def learn(self, rows: list[dict[str, Any]]) -> None:
        flax = {}
        for r in rows:
            if "img_per_s" not in r:
                continue
            if r["impl"] == "flax":
                n = r.get("compiles") or 1
                self.compiles.append(r["compile_s"] / n)
                self.flax_step.setdefault(r["mode"], r["median_s"] * 1.0)
                flax[r["mode"]] = r["median_s"]
            elif r["mode"] in flax and not r["impl"].startswith("torch-compile"):
                self.torch_ratio.append(r["median_s"] / flax[r["mode"]])


@dataclasses.dataclass
class Row:
    name: str
    estimate: Callable[[Budget], float]
    run: Callable[[], list[dict[str, Any]] | dict[str, Any]]
    min_s: float = 0.0  # runs only with at least this much left, whatever the estimate


def _models_row(s: Settings, out: str, mode: str, dtype: str, *, batch: int | None = None, torch: bool = True,
                torch_compile: bool | str = False, overrides: dict | None = None, profile: bool = False,
                model: str = "clipseg", size: int | None = None) -> tuple[Callable, Callable]:
    spec = bench.Spec(models=[model], variant=s.variant, modes=[mode], batches=[batch or s.batch],
                      size=size or s.size, dtypes=[dtype], warmup=s.warmup, iters=s.iters, torch=torch,
                      torch_compile=torch_compile, overrides=overrides or {},
                      profile_dir=os.path.join(out, "profile") if profile else "")
    n_exec = 2 if mode == "frozen" else 1
    steps = s.warmup + s.iters + 1 + (4 if profile else 0)

    def estimate(b: Budget) -> float:
        scale = (batch or s.batch) / s.batch
        flax = (0 if torch_compile == "only" else n_exec * b.per_compile() * 1.3 + steps * b.step(mode) * scale)
        ratio = max(b.torch_ratio) if b.torch_ratio else 3.0
        tor = (steps * b.step(mode) * scale * ratio + 5.0) if torch else 0.0
        if torch_compile:
            tor += 2 * b.per_compile()
        return flax + tor

    def run():
        """Yields the rows measured so far: the Flax row, then with the PyTorch rows (ratios)."""
        rows = [] if torch_compile == "only" else bench.run_flax(spec)
        if rows and all(r.get("error") for r in rows) and "attention" not in spec.overrides:
            # cuDNN attention refused at compile time on this box: measure with XLA attention too
            retry = dataclasses.replace(spec, overrides={**spec.overrides, "attention": "xla"})
            rows = rows + bench.run_flax(retry)
        if rows:
            yield rows
        if torch and model in bench.REFERENCES:
            rows = rows + bench.run_torch(spec)
            bench.add_ratios(rows)
            yield rows
    return estimate, run


def _headline_row(s: Settings, out: str, data_root: str, tag: str, extra: list[str]) -> tuple[Callable, Callable]:
    from medvlsm_jax.bench import headline

    def run_it(left: float) -> dict[str, Any]:
        args = headline.parser().parse_args([*s.headline, "--data-root", data_root, "--timeout",
                                             str(max(left - 5, 30)), "--out", out, *extra])
        if args.variant == "tiny":
            args.train, args.val, args.test, args.batch, args.eval_batch = 8, 4, 4, 4, 4
        result = headline.run(args)
        result["tag"] = tag
        return result
    return run_it


def attention_numerics(variant: str, size: int, batch: int) -> dict[str, Any]:
    """CLIPSeg logits with ``attention='auto'`` (cuDNN flash attention where it applies) against
    ``'xla'``, both bf16, and bf16 against fp32 (same weights, same inputs); whether the lowered
    forward really calls cuDNN's fused attention."""
    from flax import nnx

    from medvlsm_jax.models import registry

    spec = registry.get_spec("clipseg")
    data = bench.model_batch("clipseg", variant, batch, size)
    inputs = {k: data[k] for k in ("pixel_values", "input_ids", "attention_mask")}
    out: dict[str, Any] = {"variant": variant, "size": size, "batch": batch, "backend": jax.default_backend()}
    logits = {}
    for name, fields in (("auto_bf16", {"attention": "auto", "dtype": "bfloat16"}),
                         ("xla_bf16", {"attention": "xla", "dtype": "bfloat16"}),
                         ("xla_fp32", {"attention": "xla", "dtype": "float32"})):
        model = spec.build(spec.config(variant, **fields), nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        fwd = jax.jit(lambda st, x: nnx.merge(graphdef, st)(**x))
        text = fwd.lower(state, inputs).as_text()
        out[f"{name}_calls_cudnn_attention"] = "fmha" in text.lower() or "cudnn$" in text.lower()
        logits[name] = np.asarray(fwd(state, inputs), np.float32)
    scale = float(np.std(logits["xla_fp32"])) or 1.0
    for a, b in (("auto_bf16", "xla_bf16"), ("xla_bf16", "xla_fp32"), ("auto_bf16", "xla_fp32")):
        d = np.abs(logits[a] - logits[b])
        out[f"{a}_vs_{b}"] = {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "max_rel_to_std": float(d.max() / scale)}
    return out


def rows_for(s: Settings, out: str, data_root: str, dry: bool) -> list[Row]:
    rows = []

    def add(name, pair, min_s=0.0):
        est, run = pair
        rows.append(Row(name, est, run, min_s))

    add("frozen-bf16", _models_row(s, out, "frozen", "bf16", profile=True))
    add("full-bf16", _models_row(s, out, "full", "bf16", profile=True))
    # the headline run takes whatever is left (a run cut short still reports its epochs and the
    # projected total), so it needs only a minimum
    head = _headline_row(s, out, data_root, "cold", [])
    rows.append(Row("headline", lambda b: 30.0 if dry else 90.0, lambda: head, min_s=30.0 if dry else 90.0))
    add("inference-bf16", _models_row(s, out, "inference", "bf16"))
    rows.append(Row("attention-numerics", lambda b: 3 * b.per_compile() * (0.3 if not dry else 1.0),
                    lambda: attention_numerics("tiny", 64, 2)))
    if not dry:
        add("inference-bf16-torch-compile", _models_row(s, out, "inference", "bf16", torch_compile="only"))
        add("full-bf16-attention-xla", _models_row(s, out, "full", "bf16", torch=False,
                                                    overrides={"attention": "xla"}))
        add(f"full-bf16-b{s.big_batch}", _models_row(s, out, "full", "bf16", batch=s.big_batch))
    # frozen (encode + step + eval) and full (step + eval), unrolled about twice the scanned compile
    rows.append(Row("compile-scan-vs-unrolled", lambda b: 5 * 3 * b.per_compile(),
                    lambda: bench.compile_rows(["clipseg"], s.variant, ["frozen", "full"], s.batch, s.size,
                                               ["bf16"], [False, True])))
    if not dry:
        for mode in ("frozen", "full", "inference"):
            add(f"{mode}-fp32", _models_row(s, out, mode, "fp32"))
        head2 = _headline_row(s, out, data_root, "rerun (warm compilation cache)", ["--name", "headline_rerun"])
        rows.append(Row("headline-rerun", lambda b: 90.0, lambda: head2, min_s=90.0))
        add("cris-fp32", _models_row(s, out, "full", "fp32", model="cris", torch=False, size=s.cris_size,
                                     batch=s.cris_batch))
    return rows


def _write(out_dir: str, result: dict[str, Any]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "suite.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    with open(os.path.join(out_dir, "suite.md"), "w") as f:
        f.write(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    from medvlsm_jax.bench import headline as headline_lib
    from medvlsm_jax.bench import profile

    env = result["env"]
    lines = [f"# GPU check: {env['device']} x{env['device_count']} ({env['backend']}), {env['date']}", "",
             f"jax {env['jax']}" + (f", torch {env['torch']}" if "torch" in env else "") +
             f", {env['cpu_count']} CPUs; budget {result['budget_s']:.0f} s, used {result.get('used_s', 0):.0f} s", ""]
    models = [r for e in result["entries"] for r in (e.get("rows") or []) if "impl" in r]
    if models:
        lines += ["## Steps (Flax vs PyTorch)", "", bench.models_table(models), ""]
    for e in result["entries"]:
        if e["name"].startswith("headline") and e.get("result"):
            lines += [f"## Headline run ({e['result'].get('tag', '')})", "",
                      f"`{e['result'].get('command', '')}`", "", headline_lib.table(e["result"]), ""]
        if e["name"] == "attention-numerics" and e.get("result"):
            lines += ["## Attention numerics", "", "```", json.dumps(e["result"], indent=1), "```", ""]
        if e["name"] == "compile-scan-vs-unrolled" and e.get("rows"):
            lines += ["## Compile seconds, blocks scanned vs unrolled", "", harness.markdown_table(
                ["mode", "dtype", "batch", "scan_layers", "compile s", "eval step s", "note"],
                [[r["mode"], r["dtype"], r["batch"], r["scan_layers"], r.get("compile_s"), r.get("eval_compile_s"),
                  r.get("error", "")] for r in e["rows"]]), ""]
    for r in models:
        if r.get("profile"):
            lines.append(profile.markdown(r["profile"], f"Profile: {r['mode']} {r['dtype']} batch {r['batch']}"))
    lines += ["## Rows", "", harness.markdown_table(
        ["row", "status", "predicted s", "took s", "left s"],
        [[e["name"], e["status"], e.get("predicted_s"), e.get("seconds"), e.get("left_s")] for e in result["entries"]])]
    return "\n".join(lines) + "\n"


def run_suite(budget_s: float, dry: bool, out_root: str, data_root: str, only: list[str] | None = None
              ) -> dict[str, Any]:
    gpu = jax.default_backend() == "gpu"
    s = DRY if dry else GPU
    out = os.path.join(out_root, os.path.basename(harness.results_dir(out_root)))
    os.makedirs(out, exist_ok=True)
    budget = Budget(budget_s, gpu)
    result = {"benchmark": "suite", "env": harness.environment(), "settings": dataclasses.asdict(s),
              "budget_s": budget_s, "dry_run": dry, "peaks": bench.peaks(["fp32", "bf16"]), "entries": []}
    jsonl = os.path.join(out, "suite_rows.jsonl")
    for row in rows_for(s, out, data_root, dry):
        if only and row.name not in only:
            continue
        left = budget.left()
        predicted = row.estimate(budget)
        entry: dict[str, Any] = {"name": row.name, "predicted_s": predicted, "left_s": left}
        if predicted > left or left < row.min_s:
            entry["status"] = f"skipped: predicted {predicted:.0f} s, {left:.0f} s left"
        else:
            print(f"\n=== {row.name} (predicted {predicted:.0f} s, {left:.0f} s left)", flush=True)
            t0 = time.perf_counter()
            try:
                value = row.run()
                if callable(value):  # the headline run takes the time left as its timeout
                    value = value(budget.left())
                if isinstance(value, dict):
                    entry["result"] = value
                    entry["status"] = "error" if value.get("returncode") or value.get("error") else "done"
                    print(json.dumps({k: v for k, v in value.items() if k not in ("run_stats", "grain")}, indent=1,
                                     default=str)[:4000])
                else:  # rows, or a generator of the rows measured so far (each written at once)
                    for rows in ([value] if isinstance(value, list) else value):
                        entry["rows"], entry["status"] = rows, "running"
                        _write(out, {**result, "entries": result["entries"] + [entry]})
                    rows = entry.get("rows", [])
                    budget.learn(rows)
                    errors = [r["error"] for r in rows if r.get("error")]
                    entry["status"] = "error: " + errors[0] if errors else "done"
                    print(bench.models_table(rows) if rows and "impl" in rows[0] else json.dumps(rows, indent=1,
                                                                                                 default=str))
            except Exception as e:  # noqa: BLE001 - recorded; the suite goes on
                entry["status"] = f"error: {type(e).__name__}: {e}"[:500]
                traceback.print_exc()
            entry["seconds"] = time.perf_counter() - t0
        result["entries"].append(entry)
        result["used_s"] = budget_s - budget.left()
        with open(jsonl, "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
        _write(out, result)
        print(f"--- {row.name}: {entry['status']} ({entry.get('seconds', 0):.0f} s)", flush=True)
    print(f"\nresults in {out}")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="medvlsm-bench suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=300.0, help="seconds for every row together")
    p.add_argument("--dry-run", action="store_true", help="tiny model, one step per row (CPU check)")
    p.add_argument("--only", default="", help="comma-separated row names")
    p.add_argument("--data-root", default=None, help="the headline set (written there unless already built)")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    import tempfile

    data_root = a.data_root or tempfile.mkdtemp(prefix="suite_data_")
    only = [x.strip() for x in a.only.split(",") if x.strip()] or None
    result = run_suite(a.budget, a.dry_run, a.out, data_root, only)
    failed = [e["name"] for e in result["entries"] if e["status"].startswith("error")]
    if failed:
        print(f"failed rows: {', '.join(failed)}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
