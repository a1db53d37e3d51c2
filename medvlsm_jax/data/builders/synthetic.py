"""Base of the synthetic builders: fill the manual dir with generated data, then build."""

from __future__ import annotations

import pathlib
from typing import ClassVar

from medvlsm_jax.data.builders.base import MedvlsmBuilder, dataset_root


class SyntheticBuilder(MedvlsmBuilder, skip_registration=True):
    """Writes the dataset with :func:`medvlsm_jax.promptgen.synthetic.write_synthetic_dataset`
    when the manual dir does not hold it yet; the rest is the shared medvlsm builder."""

    SIZES: ClassVar[dict[str, int]] = {"n_train": 200, "n_val": 50, "n_test": 50}
    SEED: ClassVar[int] = 0

    def prepare_manual_dir(self, manual_dir: pathlib.Path) -> None:
        if (dataset_root(manual_dir, self.name) / "anns").is_dir():
            return
        from medvlsm_jax.promptgen.synthetic import write_synthetic_dataset  # noqa: PLC0415

        write_synthetic_dataset(manual_dir, name=self.name, seed=self.SEED, **self.SIZES)
