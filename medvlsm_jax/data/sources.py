"""Building datasets and reading their records back (random access, no TensorFlow)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from medvlsm_jax.data import masks
from medvlsm_jax.data.builders import builder_class
from medvlsm_jax.data.builders.base import RAW_DECODERS, MedvlsmBuilder, problems_error
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.registry import default_data_dir

log = logging.getLogger(__name__)


def resolve_data_dir(data_dir: str | pathlib.Path | None) -> pathlib.Path:
    """``data_dir`` or the default (``$MEDVLSM_DATA_DIR`` or ``~/medvlsm_data/tfds``)."""
    return pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()


def build_dataset(name: str, *, manual_dir: str | pathlib.Path | None = None,
                  data_dir: str | pathlib.Path | None = None,
                  overwrite: bool = False) -> MedvlsmBuilder:
    """Build ``name`` from its medvlsm-layout ``manual_dir`` into ``data_dir`` (ArrayRecord).

    ``manual_dir`` holds ``<name>/{images,masks,anns}`` (or is that folder itself); it defaults
    to TFDS's ``<data_dir>/downloads/manual``. Synthetic sets are generated there when absent.
    An existing build is reused unless ``overwrite``.

    The build is atomic: it is written into a temporary folder of ``data_dir`` and swapped in
    only when the whole source is valid, so a failed build leaves an existing build untouched
    and no empty folder behind. Every problem of the source is found in one pass and reported
    together (:func:`~medvlsm_jax.data.builders.base.problems_error`).
    """
    data_dir = resolve_data_dir(data_dir)
    manual = pathlib.Path(manual_dir).expanduser() if manual_dir else data_dir / "downloads" / "manual"
    cls = builder_class(name)
    final = data_dir / name / str(cls.VERSION)
    if is_built(name, data_dir) and not overwrite:
        return cls(data_dir=str(data_dir))
    created = [p for p in (data_dir, final.parent) if not p.exists()]
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".building-{name}-", dir=data_dir))
    log.info("building %s from %s into %s", name, manual, final)
    try:
        builder = cls(data_dir=str(tmp))
        builder.prepare_manual_dir(manual)
        if not manual.is_dir():
            raise DataError(f"manual dir {manual} does not exist.\n"
                            f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                manual_dir=str(manual), download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
        except DataError:
            raise
        except Exception as err:
            if builder.problems:  # e.g. TFDS refusing a split that lost every record
                raise problems_error(name, builder.source_root or manual, builder.problems) from err
            raise
        if builder.problems:
            raise problems_error(name, builder.source_root or manual, builder.problems)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # swap: the old build goes into the temporary folder, then away
            os.replace(final, tmp / "replaced")
        os.replace(tmp / name / str(cls.VERSION), final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(created):  # nothing left behind by a failed first build
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raw_source.cache_clear()
    return cls(data_dir=str(data_dir))


def is_built(name: str, data_dir: str | pathlib.Path | None = None) -> bool:
    """Whether ``name`` is built in ``data_dir`` (checked without instantiating the builder,
    which would create its folders)."""
    version = str(builder_class(name).VERSION)
    return (resolve_data_dir(data_dir) / name / version / "dataset_info.json").is_file()


def load_builder(name: str, data_dir: str | pathlib.Path | None = None) -> MedvlsmBuilder:
    """A prepared builder; raises a DataError with the build command when it is not built."""
    data_dir = resolve_data_dir(data_dir)
    if not is_built(name, data_dir):
        old = sorted(p.parent.name for p in (data_dir / name).glob("*/dataset_info.json"))
        if old:
            raise DataError(
                f"dataset {name!r} in {data_dir} was built by an older medvlsm-jax (builder version "
                f"{', '.join(old)}; this one reads {builder_class(name).VERSION}, which stores masks "
                f"losslessly); rebuild it: medvlsm-data build {name} --manual_dir <medvlsm root> "
                f"--data_dir {data_dir}")
        raise DataError(f"dataset {name!r} is not built in {data_dir}; run: medvlsm-data build "
                        f"{name} --manual_dir <medvlsm root> --data_dir {data_dir}")
    return builder_class(name)(data_dir=str(data_dir))


@functools.lru_cache(maxsize=64)
def raw_source(name: str, split: str, data_dir: str) -> Any:
    """Random-access source of a split (``data_dir`` resolved, see :func:`source_key`); images
    and masks stay encoded bytes."""
    builder = load_builder(name, data_dir)
    if split not in builder.info.splits:
        raise DataError(f"dataset {name!r} has no {split!r} split; it has "
                        f"{', '.join(sorted(builder.info.splits))}")
    return builder.as_data_source(split=split, decoders=RAW_DECODERS)


def original_mask(dataset: str, split: str, index: int,
                  data_dir: str | pathlib.Path | None = None, threshold: int = 0) -> np.ndarray:
    """The scoring ground truth (bool (H, W), original resolution) of record ``index``: the
    mask's OpenCV grayscale ``> threshold`` (0 as the original's ``eval_metrics.py``; see
    :mod:`medvlsm_jax.data.masks`)."""
    rec = raw_source(dataset, split, source_key(data_dir))[index]
    return masks.ground_truth(rec["mask"], threshold, where=f"{dataset}/{split} record {index}")


def source_key(data_dir: str | pathlib.Path | None) -> str:
    """The resolved data dir as the cache key of :func:`raw_source`."""
    return str(resolve_data_dir(data_dir))
