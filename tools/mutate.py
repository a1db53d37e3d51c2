"""Mutation harness (issue 18): plant one small, realistic bug at a time and check that the
tests named for it fail.

Each row of :data:`MUTATIONS` is ``(id, file, pattern, replacement, tests)``. For every row the
harness copies the tracked tree once into a temporary folder, replaces the **exact** ``pattern``
(which must occur exactly once in ``file``) by ``replacement``, runs ``pytest`` on ``tests`` in
that copy, restores the file and reports:

* ``caught``  — the named tests failed (pytest exit status 1, or 2/3/4 errors);
* ``MISSED``  — the named tests passed with the bug planted;
* ``PATTERN NOT FOUND`` / ``PATTERN NOT UNIQUE`` — the code drifted: update the row (never
  counted as caught);
* ``MUTATION INVALID`` — the mutated file does not compile (e.g. a replacement at the wrong
  indentation), ``NOT COLLECTED`` — the named tests could not be collected (an id that no
  longer exists, or a mutation that fails at import): fix the row (neither counts as caught).

The checkout itself is never modified. Not part of CI (it reruns test files once per row):

    python tools/mutate.py                 # every row (a baseline run of the tests first)
    python tools/mutate.py 3 11 B1         # selected rows
    python tools/mutate.py --list          # the table
    python tools/mutate.py --no-baseline   # skip the unmutated run

Exit status 0 only when every selected row is caught.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PLUMB = "tests/train/test_plumbing.py"

#: (id, file, exact pattern, replacement, tests that must catch it)
MUTATIONS: list[tuple[str, str, str, str, list[str]]] = [
    # ---- the 12 rows of issue 18
    ("1", "medvlsm_jax/models/clip.py",
     "x = x + self.self_attn(self.layer_norm1(x), mask)", "x = x + self.self_attn(self.layer_norm2(x), mask)",
     ["tests/conversion/test_clipseg_conversion.py::test_tiny_parity_both_formats_and_eos_conventions"]),
    ("2", "medvlsm_jax/train/losses.py",
     "(2.0 * intersection + SMOOTH_NR) / (denominator + SMOOTH_DR)", "(2.0 * intersection) / denominator",
     ["tests/train/test_losses_metrics.py"]),
    ("3", "medvlsm_jax/train/run.py",
     "scale = optim.schedule_scale(state.schedule)", "scale = 1.0",
     [f"{PLUMB}::test_train_step_scales_updates_by_the_plateau_scale"]),
    ("4", "medvlsm_jax/models/clipseg.py",
     "import IMAGENET_MEAN, IMAGENET_STD,", "import CLIP_MEAN as IMAGENET_MEAN, CLIP_STD as IMAGENET_STD,",
     ["tests/data/test_normalisation_constants.py"]),
    ("5", "medvlsm_jax/train/loop.py",
     "            state, meta, data_state = restored\n",
     "            state, meta, data_state = restored\n            state = state.replace(schedule=run.init_state.schedule)\n",
     [f"{PLUMB}::test_plateau_early_stopping_and_best_checkpoint_with_a_resume"]),
    ("6", "medvlsm_jax/train/cache.py",
     "int(i), str(p))", "int(i))",
     [f"{PLUMB}::test_cache_serves_the_features_of_each_epochs_drawn_text"]),
    ("7", "medvlsm_jax/evaluation/evaluate.py",
     "target = original_mask(name, split, index, data_dir, threshold=gt_threshold)",
     "target = np.asarray(batch['mask'][r]) > 0",
     [f"{PLUMB}::test_evaluation_rows_match_metrics_recomputed_from_saved_masks"]),
    ("8", "medvlsm_jax/evaluation/evaluate.py",
     "for r in np.flatnonzero(batch[\"valid\"]):", "for r in range(len(batch[\"valid\"])):",
     [f"{PLUMB}::test_evaluation_rows_match_metrics_recomputed_from_saved_masks"]),
    ("9", "medvlsm_jax/train/loop.py",
     "valid = np.asarray(batch[\"valid\"], np.float64)", "valid = np.ones(len(batch[\"valid\"]))",
     [f"{PLUMB}::test_validation_ignores_the_padding_of_the_last_batch"]),
    ("10", "medvlsm_jax/evaluation/evaluate.py",
     "method=\"nearest-exact\", compute_dtype=\"float64\"", "method=\"nearest\", compute_dtype=\"float64\"",
     [f"{PLUMB}::test_evaluation_rows_match_metrics_recomputed_from_saved_masks"]),
    ("11", "medvlsm_jax/train/loop.py",
     "meta[\"bad_epochs\"] >= tcfg.early_stopping_patience", "meta[\"bad_epochs\"] > tcfg.early_stopping_patience",
     [f"{PLUMB}::test_plateau_early_stopping_and_best_checkpoint_with_a_resume"]),
    ("12", "medvlsm_jax/train/loop.py",
     "if improved:\n                ckpts.save_best(", "if True:\n                ckpts.save_best(",
     [f"{PLUMB}::test_plateau_early_stopping_and_best_checkpoint_with_a_resume"]),
    # ---- weak spots named in the issue
    ("W1", "medvlsm_jax/train/optim.py",
     "eps=1e-8, weight_decay=weight_decay)", "eps=1e-8, weight_decay=0.0)",
     ["tests/train/test_optim.py"]),
    # ---- BiomedCLIPSeg (issue 11)
    ("B1", "medvlsm_jax/models/biomedclipseg.py",
     "MEDVLSM_EXTRACT_LAYERS = (4, 7, 10)", "MEDVLSM_EXTRACT_LAYERS = (3, 6, 9)",
     # the tiny parity references set their own taps; the full-size medvlsm parity
     # (test_full_size_parity_with_medvlsm, slow) checks the default's behaviour
     ["tests/models/test_biomedclipseg.py::test_logits_features_and_taps"]),
    ("B2", "medvlsm_jax/models/biomedclipseg.py",
     "x = x + self.attn(self.norm1(x))", "x = x + self.attn(self.norm2(x))",
     ["tests/conversion/test_biomedclipseg_conversion.py::test_tiny_medvlsm_checkpoints_parity"]),
    ("B3", "medvlsm_jax/models/biomedclipseg.py",
     "return self.LayerNorm(_apply(self.dropout, self.dense(x)) + residual)",
     "return self.LayerNorm(_apply(self.dropout, self.dense(x))) + residual",
     ["tests/conversion/test_biomedclipseg_conversion.py::test_tiny_medvlsm_checkpoints_parity"]),
    # ---- CNN family (issue 12)
    ("C1", "medvlsm_jax/models/resnet.py",
     "(1 - m) * var * (n / (n - 1))", "(1 - m) * var",  # torch keeps the unbiased variance
     ["tests/conversion/test_smp_conversion.py::test_train_step_matches_smp"]),
    ("C2", "medvlsm_jax/models/smp.py",
     "method=\"bilinear\",\n                      align_corners=True)", "method=\"bilinear\",\n                      align_corners=False)",
     ["tests/conversion/test_smp_conversion.py::test_tiny_logits_match_smp"]),
    ("C3", "medvlsm_jax/models/smp.py",
     "InputContract((256, 256), IMAGENET_MEAN, IMAGENET_STD, text=None)",
     "InputContract((256, 256), IMAGENET_STD, IMAGENET_MEAN, text=None)",
     ["tests/data/test_normalisation_constants.py"]),
    ("C4", "medvlsm_jax/models/smp.py",
     "zeroshot=False,", "zeroshot=True,",
     ["tests/train/test_cnn_training.py::test_zero_shot_is_refused_for_a_cnn"]),
    # ---- the run-long validation iterator (a resumed run validates as the uninterrupted one)
    ("V1", "medvlsm_jax/data/pipeline.py",
     "ds.repeat(num_epochs, reseed_each_epoch=False)", "ds.repeat(num_epochs)",
     ["tests/data/test_pipeline.py::test_repeated_eval_loader_gives_the_same_draws_every_pass"]),
]


def _copy_tree(dst: pathlib.Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\n")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def _pytest(tree: pathlib.Path, tests: list[str], timeout: float) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        rc, out = -1, "timeout"
    tail = [ln for ln in out.strip().splitlines() if ln.strip()]
    return rc, time.time() - t0, (tail[-1] if tail else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ids", nargs="*", help="row ids to run (default: all)")
    ap.add_argument("--list", action="store_true", help="print the table and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    args = ap.parse_args(argv)
    rows = [m for m in MUTATIONS if not args.ids or m[0] in args.ids]
    if args.list or not rows:
        for mid, path, pat, rep, tests in MUTATIONS:
            print(f"{mid:>3}  {path}: {pat!r} -> {rep!r}\n     {' '.join(tests)}")
        return 0 if args.list else 2
    results = []
    with tempfile.TemporaryDirectory(prefix="medvlsm-mutate-") as tmp:
        tree = pathlib.Path(tmp)
        _copy_tree(tree)
        if not args.no_baseline:
            tests = list(dict.fromkeys(t for r in rows for t in r[4]))
            rc, secs, tail = _pytest(tree, tests, args.timeout)
            print(f"baseline (unmutated, {len(tests)} targets): rc={rc} in {secs:.0f}s: {tail}", flush=True)
            if rc != 0:
                print("the named tests fail without any mutation: fix them first")
                return 2
        for mid, path, pat, rep, tests in rows:
            target = tree / path
            text = target.read_text() if target.exists() else ""
            count = text.count(pat)
            if count != 1:
                status, secs, tail = ("PATTERN NOT FOUND" if count == 0 else f"PATTERN NOT UNIQUE ({count})"), 0.0, ""
            else:
                mutated = text.replace(pat, rep)
                try:  # a mutation that does not even compile proves nothing about the tests
                    compile(mutated, str(target), "exec") if path.endswith(".py") else None
                except SyntaxError as err:
                    results.append((mid, "MUTATION INVALID"))
                    print(f"{mid:>3}  {'MUTATION INVALID':<20} {0:6.0f}s  {path}  [{err}]", flush=True)
                    continue
                target.write_text(mutated)
                try:
                    rc, secs, tail = _pytest(tree, tests, args.timeout)
                finally:
                    target.write_text(text)
                if rc in (2, 4) and "found no collectors" in tail:  # a missing test id, or an import error
                    status = "NOT COLLECTED"
                else:
                    status = ("caught" if rc in (1, 2, 3, 4) else "MISSED" if rc == 0 else "TIMEOUT" if rc == -1
                              else f"rc={rc}")
            results.append((mid, status))
            print(f"{mid:>3}  {status:<20} {secs:6.0f}s  {path}  [{tail}]", flush=True)
    caught = sum(s == "caught" for _, s in results)
    drifted = [m for m, s in results if s.startswith("PATTERN")]
    print(f"\ncaught {caught}/{len(results)} ({100 * caught / len(results):.0f} %)"
          + (f"; patterns to update: {', '.join(drifted)}" if drifted else ""))
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
