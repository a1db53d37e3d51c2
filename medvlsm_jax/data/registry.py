"""Serving-side lookups over the dataset catalogue (:mod:`medvlsm_jax.data.catalogue`, where
every dataset is described): a dataset or pooled set by name, the default data dir, and the
manual-download text of a builder."""

from __future__ import annotations

import os
import pathlib

from medvlsm_jax.data.catalogue import (DATASETS, PAPER_DATASETS, POOLED, SPECS, DatasetSpec,
                                        SplitSource)
from medvlsm_jax.data.errors import DataError

__all__ = ["DATASETS", "PAPER_DATASETS", "POOLED", "SPECS", "DatasetSpec", "SplitSource",
           "get_spec", "members", "default_data_dir", "manual_download_instructions"]

DATA_DIR_ENV = "MEDVLSM_DATA_DIR"
DEFAULT_DATA_DIR = "~/medvlsm_data/tfds"


def get_spec(name: str) -> DatasetSpec:
    """The spec of a single dataset; unknown names raise a DataError listing the known ones."""
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return SPECS[name]


def members(name: str) -> tuple[str, ...]:
    """The datasets behind ``name``: the pooled set's members, or ``(name,)``."""
    if name in POOLED:
        return POOLED[name]
    return (get_spec(name).name,)


def default_data_dir() -> pathlib.Path:
    """``$MEDVLSM_DATA_DIR`` or ``~/medvlsm_data/tfds``."""
    return pathlib.Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)).expanduser()


def manual_download_instructions(name: str) -> str:
    """The text of a builder's ``MANUAL_DOWNLOAD_INSTRUCTIONS``."""
    spec = get_spec(name)
    if spec.synthetic:
        return f"{spec.title}: generated automatically into the manual dir when absent."
    files = sorted({src.ann_file for sources in spec.splits.values() for src in sources})
    folders = sorted({d for sources in spec.splits.values() for src in sources
                      for d in (src.images_dir, src.masks_dir)})
    anns = (spec.preparation or
            "Prompt annotations: anns/ of the medvlsm release (https://github.com/naamiinepal/medvlsm).")
    return (
        f"{spec.title}\nSource: {spec.source}\nAccess conditions: {spec.access}\n"
        f"{anns}\n"
        f"Place the data in the medvlsm layout under the manual dir:\n"
        f"  <manual_dir>/{name}/{{{', '.join(folders)}}}/...\n"
        f"  <manual_dir>/{name}/anns/{{{', '.join(files)}}}\n"
        f"(<manual_dir> may also point at <root>/{name} itself.) Then run\n"
        f"  medvlsm-data build {name} --manual_dir <manual_dir> --data_dir <data_dir>"
    )
