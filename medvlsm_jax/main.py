"""Entry point: ``python -m medvlsm_jax.main --config=configs/clipseg.py:dataset=kvasir_polyp,prompt=p3
--workdir=runs/kvasir_p3 [--mode=train|eval|zeroshot] [--config.train.lr=1e-4 ...]``.

* ``train`` — finetune (resuming from ``workdir`` when it holds a checkpoint), export the best
  model to ``<workdir>/export`` and evaluate it on the test split(s);
* ``eval`` — evaluate the best (else latest) checkpoint of ``workdir`` on the test split(s);
* ``zeroshot`` — evaluate ``model.init`` (converted pretrained weights) without training.

Rerunning a command resumes. ``--fresh`` starts over (earlier outputs move to
``<workdir>/previous/<time>/``); ``--allow_config_change`` continues with a config that differs
from the recorded one beyond the safe keys (see :mod:`medvlsm_jax.train.workdir`). Errors are one
line with exit code 2 (``--verbose`` or ``MEDVLSM_VERBOSE=1`` for the traceback).

Several processes (one per host or GPU, every one running the same command) form one run:
``--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`` (or ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), or ``srun`` / ``mpirun``, detected by JAX (see
:mod:`medvlsm_jax.train.distributed` and the README). Console script: ``medvlsm-train``.
"""

from __future__ import annotations

import difflib
import logging as pylogging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ("train", "eval", "zeroshot")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file, e.g. configs/clipseg.py:dataset=kvasir_polyp",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of checkpoints, exports and results.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to do.")
_FRESH = flags.DEFINE_bool("fresh", False, "Start over: move the workdir's earlier outputs (checkpoints, export, "
                           "eval, metrics) to <workdir>/previous/<time>/ instead of resuming.")
_ALLOW_CHANGE = flags.DEFINE_bool("allow_config_change", False, "Resume although the config differs from the one "
                                  "recorded in the workdir beyond the safe keys; the change is appended to "
                                  "config_history.jsonl.")
flags.DEFINE_bool("verbose", False, "Print the full traceback of an error (or set MEDVLSM_VERBOSE=1).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "Multi-process runs: HOST:PORT of process 0 (else $JAX_COORDINATOR_ADDRESS; "
                                   "SLURM / Open MPI are detected).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes "
                                      "(else $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0 to "
                                   "num_processes - 1 (else $JAX_PROCESS_ID).")


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import jax

    from medvlsm_jax.train import distributed, loop

    logging.set_verbosity(logging.INFO)
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)  # LaunchError: one line
    config, workdir, mode = _CONFIG.value, _WORKDIR.value, _MODE.value
    pylogging.getLogger("absl").setLevel(pylogging.WARNING)  # orbax logs every save at INFO
    pylogging.getLogger("asyncio").setLevel(pylogging.CRITICAL)  # orbax's event loops after a failed read
    pylogging.getLogger("jax._src.xla_bridge").setLevel(pylogging.WARNING)  # "Unable to initialize backend 'tpu'"
    lead = jax.process_index() == 0  # the other processes' results are process 0's
    if mode == "train":
        out = loop.train_and_evaluate(config, workdir, fresh=_FRESH.value, allow_config_change=_ALLOW_CHANGE.value)
        meta = out["meta"]
        if lead:
            print(f"training stopped ({meta['stop_reason']}) after {meta['epoch']} epochs; best val Dice "
                  f"{meta['best_dice']:.4f} at epoch {meta['best_epoch']}")
            print(f"model exported to {out['export']}")
    else:
        out = (loop.evaluate_zeroshot if mode == "zeroshot" else loop.evaluate_checkpoint)(config, workdir)
    results = out["results"]
    if results and lead:
        from medvlsm_jax.evaluation import evaluate

        table = evaluate.format_table({k: v for r in results.values() for k, v in r["per_dataset"].items()})
        print(table)
        sub = "zeroshot" if mode == "zeroshot" else "eval"
        print(f"results table, results.json, per_image.csv and masks in {workdir}/{sub}")
        if config.eval.overlays:
            print(f"overlays (prediction red, ground-truth outline green) in {workdir}/{sub}/<dataset>/overlays")


def _config_keys(tree, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys += _config_keys(value, prefix + key + ".")
    return keys


def check_config_args(argv: list[str]) -> None:
    """Loads ``--config`` and checks every ``--config.KEY=VALUE`` key before absl parses them, so
    a bad config argument or an unknown key is one line (the nearest valid key named) instead of
    ml_collections' traceback."""
    from medvlsm_jax.config import load_config

    spec, overrides = None, []
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith("--config."):
            overrides.append(arg)
    if not spec:
        return
    try:
        config = load_config(spec)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"--config={spec}: {str(err.args[0]) if isinstance(err, KeyError) else err}") from err
    keys = _config_keys(config.to_dict())
    for arg in overrides:
        key = arg[len("--config."):].split("=", 1)[0]
        if key in keys:
            continue
        parent = key.rpartition(".")[0]
        siblings = [k for k in keys if k.rpartition(".")[0] == parent] or keys
        nearest = (difflib.get_close_matches(key, keys, n=1, cutoff=0.6) or
                   sorted(siblings, key=lambda k: -difflib.SequenceMatcher(None, key, k).ratio()))[0]
        raise KeyError(f"unknown config key {key!r} ({arg}); the nearest valid key is {nearest!r}")


def run() -> None:
    """Console script ``medvlsm-train``."""
    from medvlsm_jax.cli.common import guard

    flags.mark_flags_as_required(["config", "workdir"])

    def parse_flags(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as err:  # a bad or missing flag: one line, exit code 2 (absl: 1)
            raise ValueError(f"{err}; see --helpshort") from err

    def main() -> None:
        check_config_args(sys.argv[1:])
        app.run(_main, argv=sys.argv, flags_parser=parse_flags)

    sys.exit(guard("medvlsm-train", main))


if __name__ == "__main__":
    run()
