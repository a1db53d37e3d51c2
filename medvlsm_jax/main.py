"""Entry point: ``python -m medvlsm_jax.main --config=configs/clipseg.py:dataset=kvasir_polyp,prompt=p3
--workdir=runs/kvasir_p3 [--mode=train|eval|zeroshot] [--config.train.lr=1e-4 ...]``.

* ``train`` — finetune (resuming from ``workdir`` when it holds a checkpoint), export the best
  model to ``<workdir>/export`` and evaluate it on the test split(s);
* ``eval`` — evaluate the best (else latest) checkpoint of ``workdir`` on the test split(s);
* ``zeroshot`` — evaluate ``model.init`` (converted pretrained weights) without training.

Launched as several processes (``JAX_COORDINATOR_ADDRESS`` / SLURM / MPI environment), it calls
``jax.distributed.initialize()`` first. Console script: ``medvlsm-train``.
"""

from __future__ import annotations

import logging as pylogging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ("train", "eval", "zeroshot")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file, e.g. configs/clipseg.py:dataset=kvasir_polyp",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of checkpoints, exports and results.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to do.")


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from medvlsm_jax.train import loop, sharding

    sharding.maybe_initialize_distributed()
    config, workdir, mode = _CONFIG.value, _WORKDIR.value, _MODE.value
    logging.set_verbosity(logging.INFO)
    pylogging.getLogger("absl").setLevel(pylogging.WARNING)  # orbax logs every save at INFO
    if mode == "train":
        out = loop.train_and_evaluate(config, workdir)
        meta = out["meta"]
        print(f"training stopped ({meta['stop_reason']}) after {meta['epoch']} epochs; best val Dice "
              f"{meta['best_dice']:.4f} at epoch {meta['best_epoch']}")
        print(f"model exported to {out['export']}")
    else:
        out = (loop.evaluate_zeroshot if mode == "zeroshot" else loop.evaluate_checkpoint)(config, workdir)
    results = out["results"]
    if results:
        from medvlsm_jax.evaluation import evaluate

        table = evaluate.format_table({k: v for r in results.values() for k, v in r["per_dataset"].items()})
        print(table)
        sub = "zeroshot" if mode == "zeroshot" else "eval"
        print(f"results table, results.json, per_image.csv and masks in {workdir}/{sub}")
        if config.eval.overlays:
            print(f"overlays (prediction red, ground-truth outline green) in {workdir}/{sub}/<dataset>/overlays")


def run() -> None:
    """Console script ``medvlsm-train``."""
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(_main, argv=sys.argv)


if __name__ == "__main__":
    run()
