"""The layer above the trainer: the paper's experiment grid as named plans, executed resumably
(packed runs, per-run locks, a results store) and listed for schedulers.

* :mod:`medvlsm_jax.sweep.plans` — the plans and run identity;
* :mod:`medvlsm_jax.sweep.runner` — units (packs, single runs, evaluation groups) and execution;
* :mod:`medvlsm_jax.sweep.store` — ``runs/<id>/result.json``, ``index.json``, locks,
  reproducibility records;
* :mod:`medvlsm_jax.sweep.swap` — evaluation with swapped prompt attributes (Fig. 3);
* :mod:`medvlsm_jax.sweep.emit` — ``--list`` commands, SLURM arrays, parallel lines.

Console script: ``medvlsm-sweep`` (:mod:`medvlsm_jax.cli.sweep`); the report over a store is
``medvlsm-report`` (:mod:`medvlsm_jax.report`).
"""
